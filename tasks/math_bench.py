"""`math-verified`: procedural word problems (tasks/math_verified.py), the embedded model's samples, checked answers.

Each item has one response with the right final answer and three with a wrong one (RewardBench 2's best-of-4
shape). Each question follows one solved train-split problem of the same family (a one-shot demonstration), so
samples are short and in the template's format. SmolLM2-135M still solves few of these problems, so by default
a problem whose samples contain no correct answer gets a *constructed* chosen response: the family's template
solution (`worked_solution`). Such items are labelled in both fields, never mixed silently with natural ones:

- subset `sampled`, source `math-verified:<model>-samples`: chosen and rejected are all model samples;
- subset `template`, source `math-verified:<model>-samples+template-chosen`: chosen is the template solution,
  rejected are model samples. Read `sampled` as the real test and `template` as an arithmetic check on
  same-format answers. Pass `template_chosen=False` to build natural items only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from harness.backends import Backend
from harness.bench.static import Built, benchmark
from harness.types import Chat, GenerationParams, Message, PreferenceItem
from tasks.math_verified import FAMILIES, MathProblem, is_correct, make_problems, worked_solution
from tasks.sampling import N_REJECTED, build_items, chat_tuple, default_backend, pick_best_of_4


@functools.cache
def demonstrations() -> dict[str, MathProblem]:
    """One train-split problem per family, shown solved before each question of that family."""
    return {p.family: p for p in make_problems(len(FAMILIES), seed=0, split="train")}


def problem_chat(problem: MathProblem) -> Chat:
    """The chat a problem is posed in: a solved train problem of the same family, then the question.

    The demonstration makes the model answer in the template's format (about 40 tokens), so a template-written
    chosen response differs from the sampled ones in its arithmetic rather than in its style.
    """
    demo = demonstrations()[problem.family]
    return [
        Message(role="user", content=demo.question),
        Message(role="assistant", content=worked_solution(demo)),
        Message(role="user", content=problem.question),
    ]


def problem_to_item(
    problem: MathProblem, responses: Sequence[str], model: str, template_chosen: bool
) -> PreferenceItem | str:
    """The best-of-4 item of one problem's samples (or a template-chosen one), or the reason it yields none."""
    verdicts = [(r, "correct" if is_correct(r, problem.answer) else "incorrect") for r in responses]
    picked = pick_best_of_4(verdicts)
    chat = chat_tuple(problem_chat(problem))
    pid = f"math-verified/{problem.id}"
    if not isinstance(picked, str):
        chosen, rejected = picked
        return PreferenceItem(pid, chat, (chosen,), tuple(rejected), "sampled", f"math-verified:{model}-samples")
    if picked != "no correct response" or not template_chosen:
        return picked
    wrong = list(dict.fromkeys(r for r, v in verdicts if v == "incorrect" and r.strip()))
    if len(wrong) < N_REJECTED:
        return f"fewer than {N_REJECTED} incorrect responses"
    source = f"math-verified:{model}-samples+template-chosen"
    return PreferenceItem(pid, chat, (worked_solution(problem),), tuple(wrong[:N_REJECTED]), "template", source)


def build_math_verified(
    backend: Backend,
    model: str,
    limit: int | None = None,
    n_problems: int = 300,
    n_samples: int = 8,
    params: GenerationParams | None = None,
    template_chosen: bool = True,
    seed: int = 0,
) -> Built:
    """Sample and check `n_problems` eval-split problems and assemble items (see the module docstring)."""
    params = params or GenerationParams(max_new_tokens=96, temperature=0.7, top_p=0.95)
    problems = make_problems(n_problems, seed=seed, split="eval")

    def to_items(batch: list[MathProblem], samples: list[list[str]]) -> list[PreferenceItem | str]:
        return [problem_to_item(p, s, model, template_chosen) for p, s in zip(batch, samples, strict=True)]

    items, stats = build_items(problems, to_items, problem_chat, backend, n_samples, params, limit, desc="math")
    by_subset = {s: sum(it.subset == s for it in items) for s in ("sampled", "template")}
    return Built(items, {**stats, "model": model, "by_subset": by_subset, "problems_available": n_problems})


@benchmark(
    "math-verified",
    "word problems; 1 correct vs 3 wrong final answers (samples; template-written chosen where none is right)",
    cached=True,
)
def math_verified(
    limit: int | None = None,
    model: str = "smollm2-135m",
    n_problems: int = 300,
    n_samples: int = 8,
    max_new_tokens: int = 96,
    temperature: float = 0.7,
    seed: int = 0,
    template_chosen: bool = True,
) -> Built:
    """Build math-verified with the embedded model (samples cached; the build is cached by the registry)."""
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=0.95, seed=seed)
    return build_math_verified(
        default_backend(model), model, limit, n_problems, n_samples, params, template_chosen, seed
    )
