"""The frozen judge: a separate model that applies rubrics, whose weights are checked never to change."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cache import Cache
from harness.judge import Aggregate, Item, Judge
from harness.types import Verdict


def weights_digest(model: Any) -> str:
    """SHA-256 over a model's parameters and buffers, by name (changes if any weight changes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        # Bytes, not values: numpy has no bfloat16, and a byte view is exact for every dtype.
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class JudgeCounts:
    """How many verdicts and scores the judge could not give (reported, never scored as zero)."""

    verdicts: int = 0
    unscored_verdicts: int = 0
    scores: int = 0
    unscored_scores: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {
            "verdicts": self.verdicts,
            "unscored_verdicts": self.unscored_verdicts,
            "scores": self.scores,
            "unscored_scores": self.unscored_scores,
            "reasons": dict(self.reasons),
        }


class FrozenJudge:
    """A `harness.judge.Judge` over its own backend, frozen: no gradients, and a digest checked on demand.

    Args:
        spec: Backend spec of the judge model (`hf:smollm2-135m`, or a bare catalog name).
        cache_path: SQLite file for verdicts; the judge is frozen, so a verdict never goes stale.
        device: Device for an `hf` judge.
        aggregate: How verdicts become a score (`weighted_mean` or `healthbench`).
        backend: An already built backend (tests pass one to share a loaded model); `spec` is then ignored.
    """

    def __init__(
        self,
        spec: str,
        cache_path: Path | None = None,
        device: str = "cpu",
        aggregate: Aggregate = "weighted_mean",
        backend: Any = None,
    ) -> None:
        if backend is None:
            from harness.backends import make_backend

            kind = spec.partition(":")[0] if ":" in spec else "hf"
            options = {"device": device, "progress": False} if kind == "hf" else {}
            backend = make_backend(spec, **options)
        self.backend, self.aggregate = backend, aggregate
        self.model = getattr(backend, "model", None)
        if self.model is not None:
            self.model.eval()
            for param in self.model.parameters():
                param.requires_grad_(False)
        self.digest = weights_digest(self.model) if self.model is not None else ""
        cache = Cache(cache_path) if cache_path is not None else None
        self.judge = Judge(backend, cache=cache, progress=False)
        self.counts = JudgeCounts()

    def assert_unchanged(self) -> None:
        """Raise if the judge's weights differ from those it was loaded with (it must never train)."""
        if self.model is not None and weights_digest(self.model) != self.digest:
            raise AssertionError("the frozen judge's weights changed during training")

    def verdicts(self, items: Sequence[Item]) -> list[list[Verdict]]:
        """Per-criterion verdicts, counting the unscored ones."""
        out = self.judge.verdicts(items)
        for verdicts in out:
            for v in verdicts:
                self.counts.verdicts += 1
                if v.p_yes is None:
                    self.counts.unscored_verdicts += 1
                    reason = str(v.meta.get("unscored", "unknown"))[:60]
                    self.counts.reasons[reason] = self.counts.reasons.get(reason, 0) + 1
        return out

    def score(self, items: Sequence[Item]) -> list[float]:
        """One aggregate score per item (NaN where unscored), counting the NaNs."""
        return self.score_with_verdicts(items)[0]

    def score_with_verdicts(self, items: Sequence[Item]) -> tuple[list[float], list[list[Verdict]]]:
        """Aggregate scores and the per-criterion verdicts behind them (one judge pass)."""
        from harness.judge import AGGREGATES

        fn = AGGREGATES[self.aggregate]
        verdicts = self.verdicts(items)
        scores = [
            fn(rubric.criteria, [v.p_yes for v in row]) for (_, _, rubric), row in zip(items, verdicts, strict=True)
        ]
        self.counts.scores += len(scores)
        self.counts.unscored_scores += sum(math.isnan(s) for s in scores)
        return scores, verdicts
