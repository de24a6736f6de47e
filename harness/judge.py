"""The rubric judge: one P(yes) per criterion from a judge model's next-token log-probabilities, then an aggregate.

The judge chat puts the conversation and the response first and the criterion last, so all criteria of one rubric
share a token prefix. With a backend that exposes its transformers model (`mode="shared"`, the default for `hf`)
the prefix runs once per (prompt, response) and the criteria run as suffixes packed into rows of a few hundred
tokens: each suffix attends to the prefix's key/value cache and to itself only (a block-diagonal mask, positions
restarting after the prefix; see `harness.judge_forward`). `mode="unshared"` runs each full judge chat (the
reference the shared path must equal); `mode="generic"` asks any backend for `logprobs(chat, "Yes"/"No")`.

P(yes) = p(Yes) / (p(Yes) + p(No)), each summed over the spelling variants of the first answer token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

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
    criteria: Sequence[Criterion],
    met_probs: Sequence[float | None],
    *,
    skip_unscored: bool = False,
    clip: bool = True,
) -> float:
    """HealthBench score: expected points of met criteria (negatives included) / positive points, clipped to [0, 1].

    With 0/1 verdicts and `clip=False` this is exactly simple-evals' `calculate_score`, which may be negative;
    simple-evals clips only the mean over examples. A reward needs a per-response bound, so the default clips each
    response. P(yes) counts as soft credit. An unscored verdict (None or NaN) makes the score NaN, unless
    `skip_unscored`, which drops those criteria from numerator and denominator. A rubric without positive points
    is NaN (simple-evals returns None there).

    >>> rubric = [Criterion("a", 5), Criterion("b", 3), Criterion("c", -2)]
    >>> [healthbench_score(rubric, met) for met in ([1, 0, 1], [0, 0, 1], [1, None, 0])]
    [0.375, 0.0, nan]
    >>> healthbench_score(rubric, [0, 0, 1], clip=False)
    -0.25
    """
    pairs = _usable(criteria, met_probs, skip_unscored)
    possible = sum(w for w, _ in pairs if w > 0)
    if possible <= 0:
        return math.nan
    score = sum(w * p for w, p in pairs) / possible
    return min(1.0, max(0.0, score)) if clip else score


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
        from harness.judge_forward import Forward  # torch lives there

        forward = Forward(self.backend, self.batch_size, self.max_tokens)
        return forward.run(units, shared=self.mode == "shared", progress=self.progress)

    def _generic(self, conversation: Chat, response: str, texts: list[str]) -> list[dict[str, Any]]:
        """P(yes) from `backend.logprobs`: one scored continuation per criterion and answer variant."""
        variants = YES_VARIANTS + NO_VARIANTS
        chats = [judge_chat(conversation, response, t) for t in texts for _ in variants]
        logps = self.backend.logprobs(chats, list(variants) * len(texts))
        out = []
        for k in range(len(texts)):
            row = logps[k * len(variants) : (k + 1) * len(variants)]
            yes, no = row[: len(YES_VARIANTS)], row[len(YES_VARIANTS) :]
            out.append(answer_value(_distinct_mass(YES_VARIANTS, yes), _distinct_mass(NO_VARIANTS, no)))
        return out


def _distinct_mass(variants: Sequence[str], logps: Sequence[float]) -> float:
    """Log of the summed probability of the variants, counting each matched token once.

    OpenAI-compatible servers compare tokens with whitespace stripped, so " Yes" may be scored as the same "Yes"
    token that "Yes" already matched; two variants that strip alike and score identically are that one token.
    """
    seen: dict[tuple[str, float], float] = {}
    for variant, logp in zip(variants, logps, strict=True):
        seen.setdefault((variant.strip(), logp), logp)
    return _logsumexp(list(seen.values()))


def open_judge(judge: str | Backend, cache: bool | str | Path = True, **options: Any) -> Judge:
    """A Judge over a backend spec such as "hf:smollm2-135m" (loaded here) or over a ready backend.

    Args:
        judge: Backend spec or backend object; the judge model is a parameter of every rubric method.
        cache: True for the default cache file, a path for another one, False for no cache.
        **options: Passed to `Judge` (`mode`, `batch_size`, `max_tokens`, `progress`).
    """
    from harness.backends import make_backend

    backend = make_backend(judge) if isinstance(judge, str) else judge
    store = Cache() if cache is True else Cache(cache) if cache else None
    return Judge(backend, cache=store, **options)


def score_rubrics(
    judge: Judge,
    prompts: Sequence[Chat],
    responses: Sequence[str],
    rubrics: Sequence[Rubric | None],
    aggregate: Aggregate = "healthbench",
    skip_unscored: bool = False,
) -> list[float]:
    """Score each response with its prompt's rubric in one judge call; NaN (never 0) where the rubric is None."""
    if not len(prompts) == len(responses) == len(rubrics):
        raise ValueError(f"{len(prompts)} prompts, {len(responses)} responses and {len(rubrics)} rubrics differ")
    todo = [i for i, rubric in enumerate(rubrics) if rubric is not None]
    items = [(prompts[i], responses[i], rubrics[i]) for i in todo]
    out = [math.nan] * len(prompts)
    for i, value in zip(todo, judge.score(items, aggregate, skip_unscored), strict=True):  # type: ignore[arg-type]
        out[i] = value
    return out


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(v - top) for v in values))


def answer_value(log_yes: float, log_no: float) -> dict[str, Any]:
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


def split_judge_tokens(
    backend: Any, conversation: Chat, response: str, texts: Sequence[str]
) -> tuple[int, list[list[int]]]:
    """Token ids of each criterion's full judge chat and how many leading tokens all of them share with the head.

    The head is the judge chat up to the criterion; at least the last token of every chat is left unshared.
    """
    head = backend.render(judge_chat(conversation, response, _MARKER)).split(_MARKER)[0]
    fulls = [backend.render(judge_chat(conversation, response, t)) for t in texts]
    head_ids, *full_ids = backend.tokenizer([head, *fulls], add_special_tokens=False)["input_ids"]
    # A merge across the boundary can make a full tokenisation differ from the head's: share only equal tokens.
    n = min([_common_prefix(head_ids, f) for f in full_ids] + [len(f) - 1 for f in full_ids])
    return n, full_ids
