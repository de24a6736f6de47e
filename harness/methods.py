"""The reward-method interface, its registry, and the adapter that makes any method a TRL reward function.

A reward method is any object with `name`, `fit(ctx)` and `score(prompts, responses)`. Methods are created by
factories registered under the entry-point group `harness.reward_methods`; the built-in methods in `baselines/`
are registered exactly like third-party plug-ins, so nothing in the core names them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness.types import Chat, PreferenceItem, Rubric, user_chat

ENTRY_POINT_GROUP = "harness.reward_methods"


@dataclass
class FitContext:
    """What a method may use to train itself (a BT reward model, a rubric generator) before scoring."""

    workdir: Path
    seed: int = 0
    train_items: Sequence[PreferenceItem] = ()
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PolicyContext:
    """What downstream RL needs to train a policy: the same for every method in a comparison.

    `steps` is the step budget; a method that owns its policy training (EvoLM, EvoRubric) must stay within it so
    that comparisons are fair. The trained policy is saved with `save_pretrained` under `output_dir`.
    """

    base_model: str
    prompts: Sequence[Chat]
    output_dir: Path
    preset: str = "cpu-smoke"
    seed: int = 0
    steps: int = 4
    options: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class RewardMethod(Protocol):
    """Scores responses to prompts; higher is better, NaN means "could not score" (never a silent zero)."""

    name: str

    def fit(self, ctx: FitContext) -> None:
        """Train or prepare the method; a no-op for methods that need no training."""
        ...

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """Return one reward per (prompt, response) pair, in order."""
        ...


@runtime_checkable
class RubricMethod(RewardMethod, Protocol):
    """A reward method whose scores come from per-prompt rubrics, exposed for statistics and judge transfer."""

    def rubrics(self, prompts: Sequence[Chat]) -> list[Rubric | None]:
        """Return the rubric used for each prompt (None where the method has none)."""
        ...


@runtime_checkable
class PolicyTrainingMethod(RewardMethod, Protocol):
    """A method that trains its own policy (co-evolution) instead of lending `score` to the generic GRPO loop."""

    def train_policy(self, ctx: PolicyContext) -> Path:
        """Train a policy from `ctx.base_model` on `ctx.prompts` and return the directory it was saved to."""
        ...


@dataclass(frozen=True)
class MethodInfo:
    """A registered method as `harness methods` lists it."""

    name: str
    kind: str
    package: str
    summary: str


def reward_method(name: str, kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a factory as the reward method `name` of the given kind ("control", "scalar", "rubric", ...).

    The factory is found through its entry point in `harness.reward_methods`; the decorator only attaches the
    metadata that `harness methods` lists.
    """

    def mark(factory: Callable[..., Any]) -> Callable[..., Any]:
        factory.method_name = name  # type: ignore[attr-defined]
        factory.method_kind = kind  # type: ignore[attr-defined]
        return factory

    return mark


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _describe(ep: EntryPoint) -> MethodInfo:
    package = ep.dist.name if ep.dist is not None else "?"
    try:
        factory = ep.load()
    except Exception as exc:  # a broken plug-in must not hide the others
        return MethodInfo(ep.name, "unloadable", package, f"{type(exc).__name__}: {exc}")
    doc = (factory.__doc__ or "").strip().splitlines()
    return MethodInfo(ep.name, getattr(factory, "method_kind", "?"), package, doc[0] if doc else "")


def available_methods() -> list[MethodInfo]:
    """List every installed reward method, sorted by name."""
    return [_describe(ep) for _, ep in sorted(_entry_points().items())]


def create_method(name: str, **kwargs: Any) -> RewardMethod:
    """Build the reward method registered as `name` with the factory's keyword arguments.

    Only the named entry point is loaded, so a broken plug-in fails only when it is asked for.
    """
    eps = _entry_points()
    if name not in eps:
        known = ", ".join(sorted(eps)) or "none (is reward-harness installed?)"
        raise KeyError(f"unknown reward method {name!r}; installed: {known}")
    factory = eps[name].load()
    method = factory(**kwargs)
    if not isinstance(method, RewardMethod):
        raise TypeError(
            f"reward method {name!r} ({eps[name].value}) returned {type(method).__name__}, which lacks "
            "`name`, `fit` or `score` of the RewardMethod protocol"
        )
    method.spec = {"name": name, "kwargs": kwargs}  # type: ignore[attr-defined]  # provenance for manifests
    return method


def _as_chat(prompt: Any) -> Chat:
    if isinstance(prompt, str):
        return user_chat(prompt)
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _as_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    # Conversational completions arrive as [{"role": "assistant", "content": ...}].
    return "".join(m["content"] for m in completion)


def as_reward_func(method: RewardMethod) -> Callable[..., list[float | None]]:
    """Adapt a reward method to TRL's `reward_funcs` contract `(prompts, completions, **kwargs) -> rewards`.

    NaN scores become None, which TRL treats as "no reward from this function" instead of a zero.
    """

    def reward_func(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float | None]:
        scores = method.score([_as_chat(p) for p in prompts], [_as_text(c) for c in completions])
        return [None if math.isnan(s) else float(s) for s in scores]

    reward_func.__name__ = method.name  # TRL logs rewards under the function's name
    return reward_func
