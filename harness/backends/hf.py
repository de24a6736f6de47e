"""Transformers backend (CPU or GPU) with its own batched decode loop.

The loop exists instead of `model.generate` for two reasons: every row samples from its own seeded RNG, so a
generation does not depend on which other chats share its batch (which makes the content-hash cache sound),
and on CPU the per-step overhead of `generate`'s processors is a measurable share of a decode step.

On CPU the decode steps run faster kernels (`decode_kernels`: packed oneDNN linears, GQA decode attention, a
preallocated KV cache; `llama_step`: the whole step in fused calls); they change only summation order, and
`harness bench decode` measures each. Prefill and scoring (`logprobs`) run the model's own forward.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache

from harness import catalog
from harness.backends.decode_kernels import DecodeOptions, PackedLinears, decode_mode, make_cache, onednn_available
from harness.backends.llama_step import fused_llama_step, fused_step_supported
from harness.types import Chat, GenerationParams


def row_seed(seed: int, text: str) -> int:
    """Derive a per-row RNG seed from the run seed and the rendered prompt."""
    return int.from_bytes(hashlib.sha256(f"{seed}\x00{text}".encode()).digest()[:8], "big") >> 1


def sample_next(logits: torch.Tensor, params: GenerationParams, generators: list[torch.Generator]) -> torch.Tensor:
    """Pick one token per row: argmax when temperature is 0, else top-p sampling from each row's generator."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= params.top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, generators, strict=True)])


class HFBackend:
    """Generation and continuation scoring with a transformers causal LM.

    `attn` (`stock` | `gqa`), `cache` (`dynamic` | `prealloc`), `linear` (`stock` | `onednn` | `skinny`) and
    `step` (`model` | `fused`) choose the decode-step kernels; None takes the device's default
    (`DecodeOptions.for_device`: the fastest measured on CPU, the stock path elsewhere).
    """

    def __init__(
        self,
        model: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 16,
        threads: int | None = None,
        progress: bool = True,
        attn: str | None = None,
        cache: str | None = None,
        linear: str | None = None,
        step: str | None = None,
    ) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.decode_options = DecodeOptions.for_device(device, attn=attn, cache=cache, linear=linear, step=step)
        if device == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        self.model, self.tokenizer = catalog.load(model, device=device, dtype=dtype)
        self.device = device
        self.batch_size = batch_size
        self.progress = progress
        # Packing is lazy (first onednn decode), so holding one costs nothing until then.
        self.packs = PackedLinears(rows_hint=batch_size) if device == "cpu" and onednn_available() else None
        self.fused_step_supported = fused_step_supported(self.model)
        self.model_id = f"hf:{model}:{self.model.dtype}"
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {self.tokenizer.eos_token_id}
        self.eos_ids = torch.tensor(sorted(i for i in eos_ids if i is not None), device=device)

    def render(self, chat: Chat) -> str:
        """Apply the chat template, ending with the assistant's turn header."""
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def _batches(self, n: int, lengths: Sequence[int], desc: str) -> list[list[int]]:
        # Longest first: similar lengths share a batch (less padding) and a memory problem shows up at once.
        order = sorted(range(n), key=lambda i: -lengths[i])
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        return tqdm(batches, desc=desc, disable=not self.progress or len(batches) < 2, leave=False)

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """Generate one reply per chat."""
        texts = [self.render(c) for c in chats]
        out: list[str] = [""] * len(texts)
        for batch in self._batches(len(texts), [len(t) for t in texts], "generate"):
            for i, reply in zip(batch, self._decode([texts[i] for i in batch], params), strict=True):
                out[i] = reply
        return out

    @torch.inference_mode()
    def _decode(self, texts: list[str], params: GenerationParams) -> list[str]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        generators = [torch.Generator().manual_seed(row_seed(params.seed, t)) for t in texts]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        width, steps = ids.shape[1], params.max_new_tokens
        # One mask for every step; step k attends to its first width + k columns (no per-step concatenation).
        attend = torch.ones(len(texts), width + steps, dtype=torch.bool, device=self.device)
        attend[:, :width] = mask.bool()
        cache = make_cache(self.decode_options.cache, self.model, width + steps)
        new_tokens = torch.full((len(texts), steps), self.tokenizer.pad_token_id, device=self.device)
        done = torch.zeros(len(texts), dtype=torch.bool, device=self.device)
        step_ids = ids
        with decode_mode(self.model, self.decode_options, self.packs):
            for step in range(steps):
                logits = self._next_logits(step_ids, attend[:, : width + step], positions, cache)
                token = sample_next(logits.cpu(), params, generators).to(self.device)
                token = torch.where(done, self.tokenizer.pad_token_id, token)
                new_tokens[:, step] = token
                done |= torch.isin(token, self.eos_ids)
                if params.stop:
                    done |= self._hit_stop(new_tokens[:, : step + 1], params.stop)
                if bool(done.all()):
                    break
                step_ids = token[:, None]
                positions = positions[:, -1:] + 1
        return [self._finish(row, params.stop) for row in new_tokens.tolist()]

    def _next_logits(
        self, ids: torch.Tensor, attend: torch.Tensor, positions: torch.Tensor, cache: Cache
    ) -> torch.Tensor:
        """Logits `(batch, vocab)` after the last of `ids`: the fused step for single tokens where it applies."""
        if ids.shape[1] == 1 and self.decode_options.step == "fused" and self.fused_step_supported:
            return fused_llama_step(self.model, self.packs, ids, positions, cache, attend)
        out = self.model(
            input_ids=ids,
            attention_mask=attend,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :]

    def _hit_stop(self, tokens: torch.Tensor, stop: tuple[str, ...]) -> torch.Tensor:
        decoded = self.tokenizer.batch_decode(tokens, skip_special_tokens=True)
        return torch.tensor([any(s in d for s in stop) for d in decoded], device=self.device)

    def _finish(self, row: list[int], stop: tuple[str, ...]) -> str:
        eos = set(self.eos_ids.tolist())
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        text = self.tokenizer.decode(row[:cut], skip_special_tokens=True)
        for s in stop:
            text = text.split(s, 1)[0]
        return text

    @torch.inference_mode()
    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after the chat's assistant header."""
        prompts = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"] for c in chats]
        conts = [self.tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
        out: list[float] = [0.0] * len(prompts)
        lengths = [len(p) + len(c) for p, c in zip(prompts, conts, strict=True)]
        for batch in self._batches(len(prompts), lengths, "logprobs"):
            rows = [prompts[i] + conts[i] for i in batch]
            width = max(len(r) for r in rows)
            pad = self.tokenizer.pad_token_id
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=self.device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=self.device)
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for row, i in enumerate(batch):
                start, end = len(prompts[i]), len(prompts[i]) + len(conts[i])
                targets = ids[row, start:end]
                # The token at position t is predicted by the logits at t - 1.
                out[i] = float(logp[row, start - 1 : end - 1].gather(-1, targets[:, None]).sum())
        return out
