"""EvoRubric's per-prompt memory pool of validated criteria, the source of the Reasoner's dense rewards.

Validated criteria are archived per prompt. The pool stays useful by pruning itself: every Reasoner step shows
which pool criteria did not separate that step's responses, and a generated criterion that fails to separate
`evict_after` groups in a row is dropped; when the pool is full, the oldest generated criterion makes room.
Expert criteria (a HealthBench seed) are kept unless `keep_expert` is off. Churn is (added + evicted) / size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from baselines.evorubric.verify import normalise_text
from harness.types import Criterion, Rubric


@dataclass
class PoolEntry:
    """One archived criterion."""

    criterion: Criterion
    added_step: int
    source: str  # "expert" or "generated"
    flat_streak: int = 0


class MemoryPool:
    """Validated criteria per prompt, with capacity, self-pruning and churn counters."""

    def __init__(self, capacity: int = 8, evict_after: int = 2, keep_expert: bool = True) -> None:
        if capacity < 1 or evict_after < 1:
            raise ValueError(f"capacity and evict_after must be >= 1, got {capacity} and {evict_after}")
        self.capacity, self.evict_after, self.keep_expert = capacity, evict_after, keep_expert
        self.entries: dict[str, list[PoolEntry]] = {}
        self.added = 0
        self.evicted = 0

    def seed(self, prompt_id: str, rubric: Rubric, limit: int) -> None:
        """Start a prompt's pool from expert criteria: the `limit` largest by |weight|."""
        ranked = sorted(rubric.criteria, key=lambda c: -abs(c.weight))[:limit]
        self.entries[prompt_id] = [PoolEntry(c, 0, "expert") for c in ranked]

    def criteria(self, prompt_id: str) -> list[Criterion]:
        """The prompt's pool criteria, oldest first."""
        return [e.criterion for e in self.entries.get(prompt_id, [])]

    def rubric(self, prompt_id: str) -> Rubric | None:
        """The pool as a rubric (None when empty or without a positive weight, which no response could satisfy)."""
        criteria = self.criteria(prompt_id)
        if not any(c.weight > 0 for c in criteria):
            return None
        return Rubric(tuple(criteria), source="evorubric-pool", prompt_id=prompt_id)

    def add(self, prompt_id: str, criteria: Iterable[Criterion], step: int) -> int:
        """Archive new criteria (duplicates of pool texts skipped); returns how many were added."""
        entries = self.entries.setdefault(prompt_id, [])
        added = 0
        for criterion in criteria:
            if normalise_text(criterion.text) in {normalise_text(e.criterion.text) for e in entries}:
                continue
            if len(entries) >= self.capacity and not self._evict_one(entries):
                break
            entries.append(PoolEntry(criterion, step, "generated"))
            added += 1
        self.added += added
        return added

    def observe(self, prompt_id: str, flat: Sequence[bool]) -> int:
        """Record which pool criteria (in `criteria()` order) were flat on a response group; evict stale ones."""
        entries = self.entries.get(prompt_id, [])
        if len(flat) != len(entries):
            raise ValueError(f"pool of {prompt_id!r} has {len(entries)} criteria, got {len(flat)} flags")
        for entry, is_flat in zip(entries, flat, strict=True):
            entry.flat_streak = entry.flat_streak + 1 if is_flat else 0
        keep = [e for e in entries if not (self._evictable(e) and e.flat_streak >= self.evict_after)]
        evicted = len(entries) - len(keep)
        self.entries[prompt_id] = keep
        self.evicted += evicted
        return evicted

    def _evictable(self, entry: PoolEntry) -> bool:
        return entry.source != "expert" or not self.keep_expert

    def _evict_one(self, entries: list[PoolEntry]) -> bool:
        candidates = [e for e in entries if self._evictable(e)]
        if not candidates:
            return False
        entries.remove(min(candidates, key=lambda e: (-e.flat_streak, e.added_step)))
        self.evicted += 1
        return True

    def stats(self) -> dict[str, Any]:
        """Pool sizes and cumulative churn counters."""
        sizes = [len(v) for v in self.entries.values()]
        total = sum(sizes)
        return {
            "prompts": len(sizes),
            "criteria": total,
            "mean_size": total / len(sizes) if sizes else 0.0,
            "generated": sum(e.source == "generated" for v in self.entries.values() for e in v),
            "added_total": self.added,
            "evicted_total": self.evicted,
        }

    def to_json(self) -> dict[str, Any]:
        """JSON-ready pool (saved with the trained models; `from_json` reads it back)."""
        return {
            pid: [
                {"criterion": e.criterion.text, "weight": e.criterion.weight, "step": e.added_step, "source": e.source}
                for e in entries
            ]
            for pid, entries in self.entries.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], **options: Any) -> MemoryPool:
        """Rebuild a pool stored by `to_json`."""
        pool = cls(**options)
        for pid, rows in data.items():
            pool.entries[pid] = [
                PoolEntry(Criterion(r["criterion"], r["weight"]), r["step"], r["source"]) for r in rows
            ]
        return pool
