"""lm-eval model `harness`: answers `generate_until` requests with the harness's own decode loop, cached.

lm-eval's HFLM decodes with `model.generate` and recomputes every reply on each run. This model sends the same
requests through `CachedBackend(HFBackend)`: the CPU decode kernels of `harness.backends.hf` and the content-hash
cache, so re-running an evaluation recomputes nothing. It follows HFLM's request handling so that greedy replies
are the same text:

- gen_kwargs go through lm-eval's own `normalize_gen_kwargs` (aliases of `max_gen_toks`, default 256,
  `do_sample`/`temperature`); kwargs the decode loop cannot honour are refused, not ignored;
- stop strings are `until` plus the tokenizer's EOS text (`handle_stop_sequences`), and a reply is cut at the
  first occurrence of each in turn, as `postprocess_generated_text` does;
- contexts come already chat-templated by `apply_chat_template` (HFLM's rendering, system-role fallback included);
  a BOS token is prepended where HFLM's tokenizer call would add one, and contexts longer than
  `max_length - max_gen_toks` tokens keep their last tokens.

Known differences: sampled replies (`do_sample=True`) use the backend's per-row seeded RNG and top-p only (HF's
`generate` also applies its default top-k of 50), so they match HFLM in distribution, not token for token.
Truncation decodes the kept tokens back to text, which can re-tokenise differently at the cut. Greedy replies can
differ where two logits are within rounding of each other, because the decode kernels sum in another order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, resolve_max_length
from tqdm.auto import tqdm

from harness import catalog
from harness.backends.hf import HFBackend
from harness.cache import Cache, CachedBackend
from harness.types import Chat, GenerationParams

logger = logging.getLogger(__name__)

HFLM_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks: the cap when a request names none
HFLM_DEFAULT_MAX_LENGTH = 2048  # HFLM._DEFAULT_MAX_LENGTH, used when neither config nor tokenizer names one
# What the decode loop honours after `normalize_gen_kwargs`; anything else would be silently dropped.
SUPPORTED_GEN_KWARGS = frozenset({"until", "max_gen_toks", "do_sample", "temperature", "top_p"})


class UnsupportedRequestError(ValueError):
    """A request the `harness` model cannot answer exactly (a request type or a generation kwarg)."""


class RenderedPromptBackend(HFBackend):
    """HFBackend for prompts lm-eval has already rendered: `render` passes a string through unchanged.

    Its `model_id` carries the weights' fingerprint, so a policy directory retrained in place never reuses the
    cached replies of its old weights.
    """

    def __init__(self, model: str, **options: Any) -> None:
        super().__init__(model, **options)
        self.model_id = f"{self.model_id}:{catalog.fingerprint(model)[:16]}"

    def render(self, chat: Chat | str) -> str:  # type: ignore[override]
        """A rendered prompt as is; a chat through the chat template."""
        return chat if isinstance(chat, str) else super().render(chat)


def generation_params(gen_kwargs: dict[str, Any], eos_text: str | None, seed: int = 0) -> GenerationParams:
    """The backend's `GenerationParams` for one request's gen_kwargs, resolved the way HFLM resolves them.

    >>> generation_params({"until": ["Q:", ""], "do_sample": False}, "</s>")
    GenerationParams(max_new_tokens=256, temperature=0.0, top_p=1.0, seed=0, stop=('Q:', '</s>'))
    """
    kwargs = dict(normalize_gen_kwargs(gen_kwargs, HFLM_MAX_GEN_TOKS))
    unknown = sorted(set(kwargs) - SUPPORTED_GEN_KWARGS)
    if unknown:
        raise UnsupportedRequestError(
            f"generation kwargs {unknown} are not supported by the harness model "
            f"(supported: {', '.join(sorted(SUPPORTED_GEN_KWARGS))}); use --backend hf"
        )
    until = handle_stop_sequences(list(kwargs["until"]), eos=eos_text)
    # HF's generate takes the generation config's temperature (1.0) when sampling without one.
    temperature = float(kwargs.get("temperature", 1.0)) if kwargs["do_sample"] else 0.0
    return GenerationParams(
        max_new_tokens=kwargs["max_gen_toks"],
        temperature=temperature,
        top_p=float(kwargs.get("top_p", 1.0)),
        seed=seed,
        stop=tuple(s for s in until if s),  # lm-eval ignores '' (and an empty separator cannot split)
    )


@register_model("harness")
class HarnessLM(LM):
    """lm-eval model over `CachedBackend(RenderedPromptBackend(pretrained))`; generate_until requests only.

    Args:
        pretrained: A model directory or catalog name.
        device: `cpu`, `cuda`, ... (None: CUDA when available).
        dtype: `auto` is float32 on CPU (bf16 is slow there) and bfloat16 on GPU.
        batch_size: Rows per decode batch (`auto` keeps the backend's default of 16).
        max_batch_size: Accepted for lm-eval's CLI, unused.
        seed: Seed of sampled replies (each row draws from its own RNG, whatever its batch).
        cache: The generation cache (default: the harness cache); a path opens one there.
        max_length: Context plus generation limit in tokens (default: from the model config, as HFLM).
    """

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 16,
        max_batch_size: int | None = None,
        seed: int = 0,
        cache: Cache | str | Path | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = 16 if str(batch_size).startswith("auto") else int(batch_size)
        inner = RenderedPromptBackend(str(pretrained), device=device, dtype=dtype, batch_size=self.batch_size)
        self.backend = CachedBackend(inner, cache if isinstance(cache, Cache | None) else Cache(cache))
        self.tokenizer = inner.tokenizer
        self.seed = int(seed)
        self.max_length = int(
            max_length or resolve_max_length(inner.model.config, self.tokenizer, default=HFLM_DEFAULT_MAX_LENGTH)
        )
        self._bos_prefix = _bos_prefix(self.tokenizer)

    @property
    def tokenizer_name(self) -> str:
        """The tokenizer's name, as HFLM gives it (lm-eval fingerprints chat-templated request caches with it)."""
        return self.tokenizer.name_or_path.replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The tokenizer's chat template when templating is on (recorded in lm-eval's results)."""
        return self.tokenizer.chat_template if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render a chat exactly as HFLM does, dropping system messages if the template rejects them."""
        options = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
        options["continue_final_message"] = not add_generation_prompt
        try:
            return self.tokenizer.apply_chat_template(chat_history, **options)
        except jinja2.exceptions.TemplateError:
            logger.warning("chat template failed; removing the system role from the chat history")
            chat_history = [m for m in chat_history if m["role"] != "system"]
            return self.tokenizer.apply_chat_template(chat_history, **options)

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Replies to `(context, gen_kwargs)` requests, batched per identical generation settings, cached."""
        eos_text = self.tokenizer.eos_token
        params = [generation_params(r.args[1], eos_text, self.seed) for r in requests]
        prompts = [self._prompt(r.args[0], p.max_new_tokens) for r, p in zip(requests, params, strict=True)]
        groups: dict[GenerationParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p, []).append(i)
        replies: list[str] = [""] * len(requests)
        with tqdm(total=len(requests), desc="harness generate_until", disable=disable_tqdm) as bar:
            for p, members in groups.items():
                # Longest first, as the backend batches; one backend call per batch so that each finished batch
                # is cached at once (a killed run loses at most the batch in flight) and the bar moves.
                members.sort(key=lambda i: -len(prompts[i]))
                for start in range(0, len(members), self.batch_size):
                    batch = members[start : start + self.batch_size]
                    for i, reply in zip(batch, self.backend.generate([prompts[i] for i in batch], p), strict=True):
                        replies[i] = reply
                        self.cache_hook.add_partial("generate_until", requests[i].args, reply)
                    bar.update(len(batch))
        return replies

    def _prompt(self, context: str, max_gen_toks: int) -> str:
        """The text the backend tokenises: HFLM's BOS rule, then left truncation to fit the generation."""
        if self._bos_prefix and not context.startswith(self._bos_prefix):
            context = self._bos_prefix + context
        room = self.max_length - max_gen_toks
        if room <= 0:
            raise UnsupportedRequestError(
                f"max_gen_toks={max_gen_toks} leaves no room for a context within max_length={self.max_length}"
            )
        ids = self.tokenizer(context, add_special_tokens=False)["input_ids"]
        if len(ids) <= room:
            return context
        logger.warning("context of %d tokens left-truncated to %d", len(ids), room)
        return self.tokenizer.decode(ids[-room:], skip_special_tokens=False)

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Not answered: the harness tasks only generate."""
        raise _scoring_unsupported("loglikelihood")

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Not answered: the harness tasks only generate."""
        raise _scoring_unsupported("loglikelihood_rolling")


def _scoring_unsupported(kind: str) -> UnsupportedRequestError:
    return UnsupportedRequestError(
        f"the harness lm-eval model answers generate_until requests only, not {kind}; "
        "evaluate this task with --backend hf (lm-eval's HFLM)"
    )


def _bos_prefix(tokenizer: Any) -> str:
    """The BOS text HFLM's tokenizer call adds to a context that does not start with it ('' when none is added).

    HFLM tokenises contexts with the tokenizer's default special tokens; the backend tokenises without them.
    """
    probe = "a"
    added = tokenizer(probe)["input_ids"]
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    if added == plain:
        return ""
    if tokenizer.bos_token_id is not None and added == [tokenizer.bos_token_id, *plain]:
        return str(tokenizer.bos_token)
    raise UnsupportedRequestError(
        f"tokenizer {tokenizer.name_or_path!r} adds special tokens other than a leading BOS "
        f"({added} for {probe!r}); use --backend hf"
    )


def as_requests(contexts: Sequence[str], gen_kwargs: dict[str, Any]) -> list[Instance]:
    """`generate_until` Instances for plain contexts (for calling a model outside `simple_evaluate`)."""
    return [
        Instance(request_type="generate_until", doc={}, arguments=(c, dict(gen_kwargs)), idx=i)
        for i, c in enumerate(contexts)
    ]
