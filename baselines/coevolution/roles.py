"""One model, several roles by prompt: the chats each role sees, and a backend over a model that is training.

The prompt texts paraphrase EvoLM's `rubric_chat_templates.py` (stellalisy/EvoLM): the policy answers the prompt
as given; the rubric generator gets the question under a system prompt asking for atomic, objective, weighted
criteria that do not presume an answer; `policy_with_rubric` puts a rubric into the policy's system prompt (the
"rubric-conditioned answer" of EvoLM's alternative pairing). Our judge checks one criterion at a time, so the
generator is asked for `{"criterion", "weight"}` items only, without EvoLM's per-criterion scoring levels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from harness.judge import render_conversation
from harness.types import Chat, GenerationParams, Message, Rubric

# Part of every cache key and run config: bump on any change to the texts below.
ROLE_PROMPTS_VERSION = "roles-v1"
POLICY_SYSTEM = "You are a helpful assistant."
GENERATOR_SYSTEM = """You write grading rubrics for answers to questions.

First work out what the question asks for explicitly (stated constraints, required content, format) and \
implicitly (qualities a good answer needs even though the question does not say so). Then write 3 to 6 criteria:
1. Each criterion checks exactly one thing and can be answered yes or no by reading an answer.
2. Base the criteria on the question only; do not assume a particular answer unless the question has one \
verifiable answer, in which case one criterion states that value.
3. Give every criterion a weight; the weights sum to 1 and the most important criteria weigh most.

Reply with JSON only, in this form:
[{"criterion": "States that plants turn sunlight into chemical energy", "weight": 0.5}, \
{"criterion": "Avoids unexplained jargon", "weight": 0.3}, {"criterion": "Names oxygen as a product", "weight": 0.2}]"""
RUBRIC_IN_POLICY = "When answering, follow this rubric to make the answer as good as possible:\n\n{rubric}"


def question_text(chat: Sequence[Message]) -> str:
    """The text a rubric is written for: the user message alone, or the whole conversation when there are more."""
    turns = [m for m in chat if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return render_conversation(list(turns))


def render_rubric(rubric: Rubric) -> str:
    """A rubric as a bulleted list with weights, the way it is shown to the policy and the generator."""
    return "\n".join(f"- {c.text} (weight {c.weight:g})" for c in rubric.criteria)


def policy_chat(chat: Sequence[Message]) -> Chat:
    """The policy role: the prompt exactly as downstream training and evaluation give it."""
    return [Message(role=m["role"], content=m["content"]) for m in chat]


def policy_with_rubric_chat(chat: Sequence[Message], rubric: Rubric) -> Chat:
    """The policy role with a rubric in its system prompt (merged into an existing system message)."""
    note = RUBRIC_IN_POLICY.format(rubric=render_rubric(rubric))
    rest = [Message(role=m["role"], content=m["content"]) for m in chat if m["role"] != "system"]
    systems = [m["content"] for m in chat if m["role"] == "system"]
    system = "\n\n".join([*(systems or [POLICY_SYSTEM]), note])
    return [Message(role="system", content=system), *rest]


def generator_chat(chat: Sequence[Message]) -> Chat:
    """The rubric-generator role: EvoLM's generator system prompt and the question."""
    return [Message(role="system", content=GENERATOR_SYSTEM), Message(role="user", content=question_text(chat))]


class ModelHandle:
    """A backend over an already loaded model that is being trained: generation, rendering, judge access.

    It has `model`, `tokenizer`, `render` and `model_id`, so `harness.judge.Judge` can grade with it. Generation
    uses transformers' `generate` rather than `HFBackend`'s decode loop, whose CPU kernels pack (copy) the
    weights once and would go stale as training moves them. Sampling is seeded per call; outputs are never
    cached, because the weights move.
    """

    def __init__(self, model: Any, tokenizer: Any, name: str, batch_size: int = 8) -> None:
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.model_id = f"training:{name}"

    def render(self, chat: Chat) -> str:
        """Apply the chat template, ending with the assistant's turn header."""
        return self.tokenizer.apply_chat_template(list(chat), tokenize=False, add_generation_prompt=True)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """Put the model in eval mode for a generation or grading call, restoring its mode afterwards."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """One reply per chat, in batches, sampled from `params.seed` (greedy at temperature 0)."""
        import torch

        texts = [self.render(c) for c in chats]
        out: list[str] = []
        torch.manual_seed(params.seed)
        with self.evaluating(), torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                out += self._generate_batch(texts[start : start + self.batch_size], params)
        return out

    def _generate_batch(self, texts: list[str], params: GenerationParams) -> list[str]:
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        enc = enc.to(self.model.device)
        sample = params.temperature > 0
        tokens = self.model.generate(
            **enc,
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=None,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        replies = self.tokenizer.batch_decode(tokens[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for stop in params.stop:
            replies = [r.split(stop, 1)[0] for r in replies]
        return replies
