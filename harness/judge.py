"""The rubric judge: one P(yes) per criterion from a judge model's next-token log-probabilities, then an aggregate.

The judge chat puts the conversation and the response first and the criterion last, so all criteria of one rubric
share a token prefix. With a backend that exposes its transformers model (`mode="shared"`, the default for `hf`)
the prefix runs once per (prompt, response) and the criteria run as suffixes packed into one sequence per item:
each suffix attends to the prefix's key/value cache and to itself only (a block-diagonal mask, positions restarting
after the prefix), so nothing is padded inside an item. `mode="unshared"` runs each full judge chat (the reference
the shared path must equal); `mode="generic"` asks any backend for `logprobs(chat, "Yes"/"No")`.

P(yes) = p(Yes) / (p(Yes) + p(No)), each summed over the spelling variants of the first answer token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from tqdm.auto import tqdm

from harness.backends import Backend
from harness.cache import Cache, cached_call, content_key
from harness.types import Chat, Criterion, Message, Rubric, Verdict

# Bump on any change to the text below or to the answer variants: both are part of every verdict's cache key.
JUDGE_TEMPLATE_VERSION = "judge-v1"
JUDGE_SYSTEM = "You grade one response against one rubric criterion. Reply with Yes or No only."
JUDGE_USER = """# Conversation
{conversation}

# Response to grade
{response}

# Instructions
Decide whether the response to grade meets the criterion below. Some criteria describe something undesirable: \
answer Yes when the response does what the criterion describes, and No when it does not.

# Criterion
{criterion}
Answer Yes or No."""
YES_VARIANTS = ("Yes", " Yes", "yes", " yes")
NO_VARIANTS = ("No", " No", "no", " no")

Item = tuple[Chat, str, Rubric]
Aggregate = Literal["healthbench", "weighted_mean"]
Mode = Literal["auto", "shared", "unshared", "generic"]
_MARKER = "\x00criterion\x00"


def render_conversation(chat: Chat) -> str:
    """Flatten a chat to `role: content` blocks, the way simple-evals shows a conversation to its grader."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in chat)


def judge_chat(conversation: Chat, response: str, criterion: str) -> Chat:
    """The judge's chat for one criterion: everything before `criterion` is shared by the whole rubric."""
    user = JUDGE_USER.format(conversation=render_conversation(conversation), response=response, criterion=criterion)
    return [Message(role="system", content=JUDGE_SYSTEM), Message(role="user", content=user)]


def _usable(criteria: Sequence[Criterion], met_probs: Sequence[float | None], skip: bool) -> list[tuple[float, float]]:
    """(weight, probability) pairs; an empty list with an unscored verdict means "the score is unscored"."""
    if len(criteria) != len(met_probs):
        raise ValueError(f"{len(criteria)} criteria but {len(met_probs)} verdicts")
    pairs = []
    for criterion, p in zip(criteria, met_probs, strict=True):
        if p is None or math.isnan(p):
            if not skip:
                return []
            continue
        pairs.append((criterion.weight, float(p)))
    return pairs


def healthbench_score(
    criteria: Sequence[Criterion], met_probs: Sequence[float | None], *, skip_unscored: bool = False
) -> float:
    """HealthBench score: expected points of met criteria (negatives included) / positive points, clipped to [0, 1].

    With 0/1 verdicts this is simple-evals' `calculate_score`, clipped per response. P(yes) counts as soft credit.
    An unscored verdict (None or NaN) makes the score NaN, unless `skip_unscored`, which drops those criteria from
    numerator and denominator. A rubric without positive points is NaN (simple-evals returns None there).

    >>> rubric = [Criterion("a", 5), Criterion("b", 3), Criterion("c", -2)]
    >>> [healthbench_score(rubric, met) for met in ([1, 0, 1], [0, 0, 1], [1, None, 0])]
    [0.375, 0.0, nan]
    """
    pairs = _usable(criteria, met_probs, skip_unscored)
    possible = sum(w for w, _ in pairs if w > 0)
    if possible <= 0:
        return math.nan
    return min(1.0, max(0.0, sum(w * p for w, p in pairs) / possible))


def weighted_mean_score(
    criteria: Sequence[Criterion], met_probs: Sequence[float | None], *, skip_unscored: bool = False
) -> float:
    """Weighted mean of per-criterion goodness: P(yes) for a positive weight, 1 - P(yes) for a negative one.

    Weights enter by absolute value, so the score lies in [0, 1] without clipping and an all-negative rubric is
    scored. Unscored verdicts propagate as in `healthbench_score`; a rubric with no nonzero weight is NaN.

    >>> healthbench_rubric = [Criterion("a", 5), Criterion("b", 3), Criterion("c", -2)]
    >>> weighted_mean_score(healthbench_rubric, [1, 0, 1]), weighted_mean_score(healthbench_rubric, [1, 0, 0])
    (0.5, 0.7)
    """
    pairs = _usable(criteria, met_probs, skip_unscored)
    total = sum(abs(w) for w, _ in pairs)
    if total == 0:
        return math.nan
    return sum(abs(w) * (p if w > 0 else 1.0 - p) for w, p in pairs) / total


AGGREGATES: dict[str, Callable[..., float]] = {"healthbench": healthbench_score, "weighted_mean": weighted_mean_score}


def _has_weights(backend: Backend) -> bool:
    return all(hasattr(backend, name) for name in ("model", "tokenizer", "render"))


class Judge:
    """Grades (prompt, response, rubric) items with a judge backend; see the module docstring for the modes.

    Args:
        backend: the judge model; its `model_id` is part of every cache key.
        cache: where verdicts are stored by content key; None computes every verdict afresh.
        batch_size: items whose prefixes run in one forward pass (padding costs more than it saves on CPU).
        max_tokens: bound on the padded tokens of one forward pass (one prefix longer than this still runs alone).
        mode: "auto" picks "shared" when the backend exposes `model`, `tokenizer` and `render`, else "generic".
        progress: show a progress bar over items.
    """

    def __init__(
        self,
        backend: Backend,
        cache: Cache | None = None,
        batch_size: int = 1,
        max_tokens: int = 4096,
        mode: Mode = "auto",
        progress: bool = True,
    ) -> None:
        if mode == "auto":
            mode = "shared" if _has_weights(backend) else "generic"
        if mode in ("shared", "unshared") and not _has_weights(backend):
            raise ValueError(f"mode {mode!r} needs a backend with model, tokenizer and render; use mode='generic'")
        if batch_size < 1 or max_tokens < 1:
            raise ValueError(f"batch_size and max_tokens must be >= 1, got {batch_size} and {max_tokens}")
        self.backend, self.cache, self.mode, self.progress = backend, cache, mode, progress
        self.batch_size, self.max_tokens = batch_size, max_tokens

    def key(self, conversation: Chat, response: str, criterion: str) -> str:
        """Content key of one verdict: judge model, template version, conversation, response and criterion."""
        return content_key(
            "judge",
            model=self.backend.model_id,
            template=JUDGE_TEMPLATE_VERSION,
            conversation=conversation,
            response=response,
            criterion=criterion,
        )

    def verdicts(self, items: Sequence[Item]) -> list[list[Verdict]]:
        """One verdict per criterion of each item's rubric, in rubric order; cached verdicts are not recomputed."""
        jobs = [(i, j) for i, (_, _, rubric) in enumerate(items) for j in range(len(rubric.criteria))]

        def compute(indices: Sequence[int]) -> list[dict[str, Any]]:
            by_item: dict[int, list[int]] = {}
            for k in indices:
                by_item.setdefault(jobs[k][0], []).append(k)
            units = [
                (items[i][0], items[i][1], [items[i][2].criteria[jobs[k][1]].text for k in ks])
                for i, ks in by_item.items()
            ]
            flat = [value for values in self._compute(units) for value in values]
            found = dict(zip([k for ks in by_item.values() for k in ks], flat, strict=True))
            return [found[k] for k in indices]

        if self.cache is None:
            values = compute(range(len(jobs)))
        else:
            keys = [self.key(items[i][0], items[i][1], items[i][2].criteria[j].text) for i, j in jobs]
            values = cached_call(self.cache, keys, compute)
        out: list[list[Verdict]] = [[] for _ in items]
        for (i, j), value in zip(jobs, values, strict=True):
            meta = {k: v for k, v in value.items() if k != "p_yes"}
            out[i].append(Verdict(items[i][2].criteria[j], value["p_yes"], meta))
        return out

    def score(
        self, items: Sequence[Item], aggregate: Aggregate = "healthbench", skip_unscored: bool = False
    ) -> list[float]:
        """One aggregate score per item (NaN where unscored; see `healthbench_score`)."""
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown aggregate {aggregate!r}; expected one of {sorted(AGGREGATES)}")
        fn = AGGREGATES[aggregate]
        return [
            fn(rubric.criteria, [v.p_yes for v in verdicts], skip_unscored=skip_unscored)
            for (_, _, rubric), verdicts in zip(items, self.verdicts(items), strict=True)
        ]

    def _compute(self, units: list[tuple[Chat, str, list[str]]]) -> list[list[dict[str, Any]]]:
        """Verdict values for (conversation, response, criteria) units, one list per unit."""
        if self.mode == "generic":
            return [self._generic(conversation, response, texts) for conversation, response, texts in units]
        forward = _Forward(self.backend, self.batch_size, self.max_tokens)
        return forward.run(units, shared=self.mode == "shared", progress=self.progress)

    def _generic(self, conversation: Chat, response: str, texts: list[str]) -> list[dict[str, Any]]:
        """P(yes) from `backend.logprobs`: one scored continuation per criterion and answer variant."""
        variants = YES_VARIANTS + NO_VARIANTS
        chats = [judge_chat(conversation, response, t) for t in texts for _ in variants]
        logps = self.backend.logprobs(chats, list(variants) * len(texts))
        out = []
        for k in range(len(texts)):
            row = logps[k * len(variants) : (k + 1) * len(variants)]
            out.append(_answer(_logsumexp(row[: len(YES_VARIANTS)]), _logsumexp(row[len(YES_VARIANTS) :])))
        return out


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def _answer(log_yes: float, log_no: float) -> dict[str, Any]:
    """Verdict value from the summed log-probabilities of the yes and no variants (unscored if both vanish)."""
    both = _logsumexp([log_yes, log_no])
    if math.isnan(both) or both == -math.inf:
        return {"p_yes": None, "yes_no_mass": 0.0, "unscored": "no probability on any answer variant"}
    return {"p_yes": math.exp(log_yes - both), "yes_no_mass": math.exp(both)}


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


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


class _Forward:
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
        heads = self.backend.render(judge_chat(conversation, response, _MARKER)).split(_MARKER)[0]
        fulls = [self.backend.render(judge_chat(conversation, response, t)) for t in texts]
        head_ids, *full_ids = self.tokenizer([heads, *fulls], add_special_tokens=False)["input_ids"]
        # A merge across the boundary can make a full tokenisation differ from the head's: share only equal tokens.
        n = min([_common_prefix(head_ids, f) for f in full_ids] + [len(f) - 1 for f in full_ids])
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
            budget = max(1, self.max_tokens // len(group))
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
        return [_answer(y, n) for y, n in zip(yes.tolist(), no.tolist(), strict=True)]


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
