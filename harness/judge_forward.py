"""The transformers side of the judge: tokenisation, the prefix pass, the packed suffix pass and the answer head.

`Judge` (harness.judge) uses this for `mode="shared"` and `mode="unshared"`. In shared mode each item's prefix
(judge chat up to the criterion) runs once and its criteria run as suffixes packed into rows: a block-diagonal mask
lets every suffix token see the prefix's key/value cache and the earlier tokens of its own suffix only, and positions
restart after the prefix, so each verdict equals the one from running its full judge chat alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from harness.judge import NO_VARIANTS, YES_VARIANTS, answer_value, split_judge_tokens
from harness.types import Chat

# Packed suffix rows longer than this cost more than they save: every token of a row attends over the whole row
# (the block-diagonal mask only zeroes the other criteria), measured 230 vs 270 tokens per CPU-second at 4096 vs 512.
SUFFIX_CHUNK_TOKENS = 512


def _chunks(suffixes: list[tuple[int, list[int]]], budget: int) -> list[list[tuple[int, list[int]]]]:
    """Pack (criterion index, suffix ids) pairs greedily into chunks of at most `budget` tokens (one at least)."""
    chunks: list[list[tuple[int, list[int]]]] = []
    size = budget + 1
    for pair in suffixes:
        if size + len(pair[1]) > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(pair)
        size += len(pair[1])
    return chunks


def _groups(lengths: Sequence[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """Split positions of a longest-first list into batches of <= batch_size rows and <= max_tokens padded tokens."""
    groups: list[list[int]] = []
    for i in range(len(lengths)):
        if groups and len(groups[-1]) < batch_size and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


Encoded = tuple[list[int], list[tuple[int, list[int]]]]


class Forward:
    """The transformers side of the judge: tokenisation, prefix pass, packed suffix pass and the answer head."""

    def __init__(self, backend: Any, batch_size: int, max_tokens: int) -> None:
        self.backend, self.model, self.tokenizer = backend, backend.model, backend.tokenizer
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.yes, self.no = self._variant_ids(YES_VARIANTS), self._variant_ids(NO_VARIANTS)
        config = self.model.config
        self.limit = getattr(config, "max_position_embeddings", None) or math.inf
        # The packed mask is full attention over the prefix; a sliding-window layer would see more than it should.
        sliding = any("sliding" in t for t in getattr(config, "layer_types", None) or ())
        self.sliding = sliding or bool(
            getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True)
        )

    def _variant_ids(self, variants: Sequence[str]) -> list[int]:
        """Ids of the variants that are one token for this tokenizer (only the first answer token is scored)."""
        ids = [self.tokenizer(v, add_special_tokens=False)["input_ids"] for v in variants]
        return sorted({i[0] for i in ids if len(i) == 1})

    def encode(self, conversation: Chat, response: str, texts: list[str]) -> tuple[Encoded, list[dict[str, Any]]]:
        """Shared prefix ids and (index, suffix ids) per scorable criterion; prefix + suffix is the full judge chat."""
        n, full_ids = split_judge_tokens(self.backend, conversation, response, texts)
        values: list[dict[str, Any]] = [{} for _ in texts]
        suffixes = []
        for j, ids in enumerate(full_ids):
            if len(ids) > self.limit:
                values[j] = {"p_yes": None, "unscored": f"judge chat of {len(ids)} tokens exceeds {self.limit}"}
            else:
                suffixes.append((j, ids[n:]))
        return (full_ids[0][:n], suffixes), values

    def run(self, units: list[tuple[Chat, str, list[str]]], shared: bool, progress: bool) -> list[list[dict[str, Any]]]:
        """Verdict values per unit, from the shared-prefix or the unshared forward passes."""
        import torch

        if shared and self.sliding:
            raise ValueError("mode='shared' does not support sliding-window attention; use mode='unshared'")
        encoded, values = zip(*(self.encode(*u) for u in units), strict=True) if units else ((), ())
        bar = tqdm(total=len(units), desc="judge", disable=not progress or len(units) < 2, leave=False)
        with torch.inference_mode():
            if shared:
                self._run_shared(list(encoded), list(values), bar)
            else:
                self._run_unshared(list(encoded), list(values), bar)
        bar.close()
        return list(values)

    def _run_shared(self, encoded: list[Encoded], values: list[list[dict[str, Any]]], bar: Any) -> None:
        order = sorted((i for i in range(len(encoded)) if encoded[i][1]), key=lambda i: -len(encoded[i][0]))
        for positions in _groups([len(encoded[i][0]) for i in order], self.batch_size, self.max_tokens):
            group = [order[p] for p in positions]
            kv, lengths = self._prefix([encoded[i][0] for i in group])
            budget = max(1, min(SUFFIX_CHUNK_TOKENS, self.max_tokens // len(group)))
            units = [(g, chunk) for g, i in enumerate(group) for chunk in _chunks(encoded[i][1], budget)]
            for start in range(0, len(units), len(group)):
                batch = units[start : start + len(group)]
                answers = iter(self._suffixes(kv, lengths, batch))
                for g, chunk in batch:
                    for j, _ in chunk:
                        values[group[g]][j] = next(answers)
            bar.update(len(group))

    def _run_unshared(self, encoded: list[Encoded], values: list[list[dict[str, Any]]], bar: Any) -> None:
        rows = [(i, j, prefix + suffix) for i, (prefix, suffixes) in enumerate(encoded) for j, suffix in suffixes]
        rows.sort(key=lambda r: -len(r[2]))
        done = set()
        for positions in _groups([len(r[2]) for r in rows], self.batch_size, self.max_tokens):
            ids, mask = self._right_pad([rows[p][2] for p in positions])
            hidden = self.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            last = hidden[range(len(positions)), mask.sum(-1) - 1]
            for p, answer in zip(positions, self._answers(last), strict=True):
                values[rows[p][0]][rows[p][1]] = answer
            finished = {rows[p][0] for p in positions} - done
            done |= finished
            bar.update(len(finished))

    def _right_pad(self, seqs: Sequence[list[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [self.pad] * (width - len(s)) for s in seqs], device=self.model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.model.device)
        return ids, mask

    def _prefix(self, prefixes: list[list[int]]) -> tuple[list[tuple[Any, Any]], Any]:
        """Run the prefixes (right-padded) and return each layer's (keys, values) and the real prefix lengths."""
        ids, mask = self._right_pad(prefixes)
        out = self.model.base_model(input_ids=ids, attention_mask=mask, use_cache=True)
        return [(layer.keys, layer.values) for layer in out.past_key_values.layers], mask.sum(-1)

    def _suffixes(self, kv: list[tuple[Any, Any]], lengths: Any, units: list[tuple[int, list]]) -> list[dict[str, Any]]:
        """Run packed suffix rows against their prefix's cache; answers in unit, then criterion, order."""
        import torch
        from transformers import DynamicCache

        rows = torch.tensor([g for g, _ in units], device=self.model.device)
        seqs = [[t for _, suffix in chunk for t in suffix] for _, chunk in units]
        ids, _ = self._right_pad(seqs)
        segment = torch.full(ids.shape, -1, device=ids.device)
        positions = torch.zeros_like(ids)
        last = []
        for r, (g, chunk) in enumerate(units):
            start = 0
            for k, (_, suffix) in enumerate(chunk):
                end = start + len(suffix)
                segment[r, start:end] = k
                positions[r, start:end] = torch.arange(int(lengths[g]), int(lengths[g]) + len(suffix))
                last.append((r, end - 1))
                start = end
        mask = _packed_mask(segment, lengths[rows], kv[0][0].shape[-2], self.model.dtype)
        cache = DynamicCache([(k[rows], v[rows]) for k, v in kv])
        hidden = self.model.base_model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
        ).last_hidden_state
        r_idx, t_idx = zip(*last, strict=True)
        return self._answers(hidden[list(r_idx), list(t_idx)])

    def _answers(self, hidden: Any) -> list[dict[str, Any]]:
        """Verdict values from the final hidden states of the judge chats' last tokens."""
        import torch

        logits = self.model.get_output_embeddings()(hidden).float()
        cap = getattr(self.model.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        logp = torch.log_softmax(logits, dim=-1)
        yes, no = torch.logsumexp(logp[:, self.yes], -1), torch.logsumexp(logp[:, self.no], -1)
        return [answer_value(y, n) for y, n in zip(yes.tolist(), no.tolist(), strict=True)]


def _packed_mask(segment: Any, prefix_lengths: Any, prefix_width: int, dtype: Any) -> Any:
    """Additive 4D mask: a suffix token sees its row's real prefix and the earlier tokens of its own suffix."""
    import torch

    real = segment >= 0
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool, device=segment.device).tril()
    own = (segment[:, :, None] == segment[:, None, :]) & causal & real[:, None, :]
    # Padding queries see only themselves, so no softmax row is empty (an empty row would give NaN).
    own |= torch.eye(width, dtype=torch.bool, device=segment.device)
    prefix = torch.arange(prefix_width, device=segment.device)[None, None, :] < prefix_lengths[:, None, None]
    allowed = torch.cat([prefix & real[:, :, None], own], dim=-1)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=segment.device).masked_fill_(~allowed, torch.finfo(dtype).min)
