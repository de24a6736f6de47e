"""vLLM backend for GPU machines. vLLM is an optional extra: `pip install 'reward-harness[vllm]'`.

Not exercised by the CPU test suite (vLLM needs a CUDA device); see README for its verification status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import catalog
from harness.backends.hf import row_seed
from harness.types import Chat, GenerationParams


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise RuntimeError(
            "the vllm backend needs vLLM and a CUDA GPU: pip install 'reward-harness[vllm]' on a GPU machine"
        ) from exc
    return vllm


class VLLMBackend:
    """Generation and continuation scoring with a vLLM engine held in this process."""

    def __init__(self, model: str, **engine_kwargs: Any) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        self.llm = vllm.LLM(model=catalog.resolve(model), **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.model_id = f"vllm:{model}"

    def render(self, chat: Chat) -> str:
        """Apply the chat template, ending with the assistant's turn header."""
        return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """Generate one reply per chat; each request gets its own seed, as in the hf backend."""
        if not chats:
            return []
        sampling = [
            self._vllm.SamplingParams(
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                seed=row_seed(params.seed, self.render(chat)),
                stop=list(params.stop) or None,
            )
            for chat in chats
        ]
        outputs = self.llm.chat([list(c) for c in chats], sampling_params=sampling, use_tqdm=True)
        return [o.outputs[0].text for o in outputs]

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens, from vLLM's prompt log-probabilities."""
        if not chats:
            return []
        from vllm.inputs import TokensPrompt

        prompts, spans = [], []
        for chat, text in zip(chats, continuations, strict=True):
            head = self.tokenizer(self.render(chat), add_special_tokens=False)["input_ids"]
            tail = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            prompts.append(TokensPrompt(prompt_token_ids=head + tail))
            spans.append((len(head), len(head) + len(tail)))
        sampling = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0)
        outputs = self.llm.generate(prompts, sampling_params=sampling, use_tqdm=True)
        totals = []
        for out, prompt, (start, end) in zip(outputs, prompts, spans, strict=True):
            ids = prompt["prompt_token_ids"]
            totals.append(sum(out.prompt_logprobs[t][ids[t]].logprob for t in range(start, end)))
        return totals
