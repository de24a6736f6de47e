r"""Rubric statistics as EvoLM reports them: criteria counts, weight concentration, label-only and value shares.

Definitions follow EvoLM's scripts/eval/rubric_aggregate_stats.py (stellalisy/EvoLM), which produced the
label-only and value-embedding shares the paper reports: a criterion is label-only when its text has at
most 40 characters (`LABEL_ONLY_MAX_LEN`), and embeds a value when `_RE_SPECIFIC` matches. EvoLM writes
the number as `\d+\.?\d*`, which matches exactly where `\d` does; its unbounded "code" also matches
"decode", kept so the shares stay comparable.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence

from harness.types import Rubric

LABEL_ONLY_MAX_CHARS = 40
_VALUE = re.compile(r"\d|= |equals |formula|equation|code|pattern|exact|verbatim", re.I)


def is_label_only(text: str) -> bool:
    """Whether a criterion is a bare label such as "Clarity" (EvoLM: at most 40 characters, whatever they say).

    >>> is_label_only("Clarity"), is_label_only("States that the maximum daily dose is 4 g")
    (True, False)
    """
    return len(text.strip()) <= LABEL_ONLY_MAX_CHARS


def embeds_value(text: str) -> bool:
    """Whether a criterion names a concrete expected value (EvoLM: a digit, "= ", "exact", "formula", ...).

    >>> embeds_value("States that the answer is 42"), embeds_value("Explains the reasoning clearly")
    (True, False)
    """
    return _VALUE.search(text) is not None


def _one_rubric(rubric: Rubric) -> dict[str, float]:
    if not rubric.criteria:
        raise ValueError(f"rubric {rubric.prompt_id!r} has no criteria; count it as a parse failure")
    texts = [c.text for c in rubric.criteria]
    magnitudes = [abs(c.weight) for c in rubric.criteria]
    total = math.fsum(magnitudes)
    n = len(texts)
    return {
        "criteria": n,
        "weight_concentration": max(magnitudes) / total if total > 0 else math.nan,
        "label_only_share": sum(map(is_label_only, texts)) / n,
        "value_embedding_share": sum(map(embeds_value, texts)) / n,
        "negative_share": sum(c.weight < 0 for c in rubric.criteria) / n,
        "criterion_chars_mean": sum(map(len, texts)) / n,
    }


def rubric_stats(rubrics: Sequence[Rubric]) -> dict[str, float]:
    """Summarise a rubric set the way EvoLM does: per-rubric measures averaged over rubrics.

    Shares are fractions in [0, 1] computed within each rubric, then averaged (each rubric counts once,
    as in EvoLM). Weight concentration is the largest |weight| over the sum of |weights|. Parse failures
    are not rubrics: report them from a `ParseTally` instead of passing empty rubrics here.

    Args:
        rubrics: Parsed rubrics, each with at least one criterion.

    Returns:
        `n_rubrics`, `criteria_mean`, `criteria_median`, `weight_concentration`, `label_only_share`,
        `value_embedding_share`, `negative_share` and `criterion_chars_mean`; NaN for all but
        `n_rubrics` when `rubrics` is empty.
    """
    per_rubric = [_one_rubric(r) for r in rubrics]
    counts = [s["criteria"] for s in per_rubric]
    keys = ["weight_concentration", "label_only_share", "value_embedding_share", "negative_share"]
    summary = {
        "n_rubrics": float(len(per_rubric)),
        "criteria_mean": statistics.fmean(counts) if counts else math.nan,
        "criteria_median": float(statistics.median(counts)) if counts else math.nan,
    }
    for key in [*keys, "criterion_chars_mean"]:
        summary[key] = statistics.fmean(s[key] for s in per_rubric) if per_rubric else math.nan
    return summary
