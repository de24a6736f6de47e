"""Rubrics written by models: a tolerant parser and storage helpers (statistics: `harness.rubric_stats`).

`parse_rubric` accepts JSON (bare, fenced, wrapped in an object, with trailing commas, or truncated after
some complete items) and numbered or bulleted markdown lists with weights written as "(5 points)", "[+3]",
"-4 pts", "Weight 3:" or a "- weight: 0.2" line under the item. Anything it cannot turn into a usable rubric
raises `RubricParseError` with a short machine-readable `reason`; `ParseTally` counts those reasons so a
run reports its failure rate instead of scoring failures as zero.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from harness.types import Criterion, Rubric

# Bounds past which a rubric is absurd rather than merely long. HealthBench's expert "cluster" criteria run
# to 3,185 characters and its rubrics to 33 criteria, so the limits sit above those.
MAX_INPUT_CHARS = 200_000
MAX_CRITERIA = 50
MAX_CRITERION_CHARS = 4_000
MAX_ABS_WEIGHT = 1_000.0
DEFAULT_WEIGHT = 1.0

# Every `RubricParseError.reason`; reports list failure counts under these names.
REASONS = tuple(
    "not_text empty too_long invalid_json invalid_weight no_criteria too_many_criteria criterion_too_long"
    " absurd_weight all_zero_weights no_positive_weight".split()
)

# A parsed but not yet validated criterion: text, weight (None when the model gave none), tags.
_Raw = tuple[str, float | None, tuple[str, ...]]


class RubricParseError(ValueError):
    """A model's output could not be turned into a usable rubric; `reason` is one of `REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.reason, self.detail)


# ----------------------------------------------------------------------------------------------- JSON
_DECODER = json.JSONDecoder()
_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
_LINE_BRACKET = re.compile(r"^[ \t]*[\[{]", re.M)
# Ignores strings, so it only runs after a strict decode failed; ", ]" inside a criterion is rare.
_TRAILING_COMMA = re.compile(r",(?=\s*[\]}])")
_WRAPPED_LIST = re.compile(r'"(?:criteria|rubrics?|items|checklist|requirements)"\s*:\s*\[', re.I)
_WRAPPER_KEYS = ("criteria", "rubric", "rubrics", "items", "checklist", "requirements")
_TEXT_KEYS = ("criterion", "text", "requirement", "check", "item", "rubric", "content")
_DESCRIPTION_KEYS = ("description", "details", "explanation")
_LABEL_KEYS = ("name", "title", "label", "aspect", "dimension")
_WEIGHT_KEYS = ("weight", "points", "point", "score", "importance", "pts")
_WEIGHT_STRING = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*(?:points?|pts?|%)?\s*", re.I)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce_weight(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and (match := _WEIGHT_STRING.fullmatch(value)):
        value = match.group(1)
    elif not _is_number(value):
        raise RubricParseError("invalid_weight", repr(value)[:40])
    try:
        weight = float(value)
    except OverflowError:  # a JSON integer with hundreds of digits
        weight = math.inf
    if not math.isfinite(weight):
        raise RubricParseError("invalid_weight", repr(value)[:40])
    return weight


def _first_str(obj: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    return next((obj[k] for k in keys if isinstance(obj.get(k), str)), None)


def _item_from_json(obj: Any) -> _Raw | None:
    if isinstance(obj, str):
        return (*_split_weight(obj), ())
    if isinstance(obj, list) and len(obj) == 2 and isinstance(obj[0], str) and _is_number(obj[1]):
        return obj[0], _coerce_weight(obj[1]), ()  # ["Mentions X", 3]
    if not isinstance(obj, dict):
        return None
    fields = {str(k).strip().lower(): v for k, v in obj.items()}
    text = _first_str(fields, _TEXT_KEYS)
    if text is None:
        description, label = _first_str(fields, _DESCRIPTION_KEYS), _first_str(fields, _LABEL_KEYS)
        text = f"{label}: {description}" if label and description else description or label
    if text is None:
        return None
    weight = next((fields[k] for k in _WEIGHT_KEYS if fields.get(k) is not None), None)
    if weight is None:
        text, split = _split_weight(text)
        return text, split, _tags(fields.get("tags"))
    return text, _coerce_weight(weight), _tags(fields.get("tags"))


def _tags(value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(t.strip() for t in values if isinstance(t, str) and t.strip())


def _items_from_value(value: Any, depth: int = 0) -> list[_Raw] | None:
    """The criteria in a decoded JSON value, or None when it does not look like a rubric at all."""
    if isinstance(value, list):
        return [item for item in map(_item_from_json, value) if item is not None]
    if not isinstance(value, dict) or depth > 3:
        return None
    lowered = {str(k).strip().lower(): v for k, v in value.items()}
    for key in _WRAPPER_KEYS:
        if isinstance(lowered.get(key), list | dict):
            return _items_from_value(lowered[key], depth + 1)
    lists = [v for v in value.values() if isinstance(v, list)]
    if len(lists) == 1:
        return _items_from_value(lists[0], depth + 1)
    single = _item_from_json(value)
    return None if single is None else [single]


def _salvage(body: str) -> list[Any]:
    """Decode the complete items of a list whose end is missing or broken (truncated model output)."""
    wrapped = _WRAPPED_LIST.search(body)
    pos = wrapped.end() if wrapped else 1 if body.startswith("[") else 0
    items: list[Any] = []
    while True:
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(body) or body[pos] in "]}":
            return items
        try:
            value, pos = _DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError):
            return items
        items.append(value)


def _decode(body: str) -> Any:
    """The first JSON value in `body`, repaired where possible; None when nothing could be decoded."""
    repaired = _TRAILING_COMMA.sub("", body)
    for attempt in (body, repaired):
        try:
            return _DECODER.raw_decode(attempt)[0]
        except (ValueError, RecursionError):
            continue
    return _salvage(repaired) or None


def _parse_json(text: str) -> tuple[list[_Raw], bool]:
    """Criteria from the first JSON candidate that yields any, and whether JSON was present but unreadable."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    if line_start := _LINE_BRACKET.search(text):  # prose such as "Rubric [v2]:" before the JSON
        candidates.append(text[line_start.start() :])
    unreadable = False
    for candidate in candidates:
        start = min((i for i in (candidate.find("["), candidate.find("{")) if i >= 0), default=-1)
        if start < 0:
            continue
        value = _decode(candidate[start:])
        looks_like_json = not candidate[:start].strip()
        unreadable = unreadable or (value is None and looks_like_json)
        items = _items_from_value(value) if value is not None else None
        if items:
            return items, False
    return [], unreadable


# ------------------------------------------------------------------------------------------- markdown
_NUM = r"([+-]?\d{1,6}(?:\.\d{1,6})?)"
_UNIT = r"(?:points?|pts?|pt)"
_BRACKET_UNIT = r"(?:points?|pts?|pt|%)"
_SEP = r"[:.)\-–—]"
_ITEM = re.compile(r"\s{0,12}(?:\d{1,3}[.)]|[-*•+]|(?:criterion|item)\s*#?\d{1,3}\s*[:.)-])\s+(.*)", re.I)
_WEIGHT_LINE = re.compile(rf"\**(?:weight|points?|pts|score)\**\s*[:=]\s*\**{_NUM}\s*{_BRACKET_UNIT}?\**\.?", re.I)
_LEADING = [
    re.compile(rf"\[\s*{_NUM}\s*{_BRACKET_UNIT}?\s*\]\s*{_SEP}?\s*", re.I),  # [+3] text
    re.compile(rf"\(\s*{_NUM}\s*{_BRACKET_UNIT}?\s*\)\s*{_SEP}?\s*", re.I),  # (5 points) text
    re.compile(rf"(?:weight|points?|score)\s*[:=]?\s*{_NUM}\s*{_UNIT}?\s*{_SEP}\s*", re.I),  # Weight 3: text
    re.compile(rf"{_NUM}\s*{_UNIT}\s*{_SEP}?\s+", re.I),  # -4 pts: text
    re.compile(r"([+-]\d{1,6}(?:\.\d{1,6})?)\s*[:.)\-–—]?\s+"),  # +3 text (the sign makes it a weight)
]
_TRAILING = [
    re.compile(rf"[\[(]\s*(?:weight\s*[:=]?\s*)?{_NUM}\s*{_BRACKET_UNIT}?\s*[\])]\s*\.?$", re.I),  # (5 points)
    re.compile(rf"\b(?:weight|points?|score)\s*[:=]\s*{_NUM}\s*{_UNIT}?\s*\.?$", re.I),  # , weight: 0.2
    re.compile(rf"(?:[,;:–—]\s*|\s-\s+|\s(?=[+-]))\s*{_NUM}\s*{_UNIT}\s*\.?$", re.I),  # — 5 points / -4 pts
]
# Anywhere in the line, but only with an explicit unit or keyword: "**Accuracy (5 points):** The ...".
_MIDDLE = re.compile(rf"[\[(]\s*(?:weight\s*[:=]?\s*{_NUM}|{_NUM}\s*{_BRACKET_UNIT})\s*[\])]", re.I)
_LABEL_PREFIX = re.compile(r"(?:criterion|criteria|requirement)\s*#?\d{0,3}\s*[:.)\-–—]\s*", re.I)
_TOTAL_LINE = re.compile(r"(?:total|sum|max(?:imum)?)(?:\s+(?:points?|score|weight))?", re.I)


def _number(match: re.Match[str]) -> float:
    return float(next(g for g in match.groups() if g is not None))


def _split_weight(line: str) -> tuple[str, float | None]:
    """Separate a weight marker from a criterion line; the weight is None when the line has none."""
    line = line.strip()
    for pattern in _LEADING:
        if match := pattern.match(line):
            return line[match.end() :], _number(match)
    # End-anchored patterns run on a bounded tail: searching a long line for them would be quadratic.
    offset = max(0, len(line) - 80)
    for pattern in _TRAILING:
        if match := pattern.search(line, offset):
            return line[: match.start()], _number(match)
    if match := _MIDDLE.search(line):
        left, right = line[: match.start()].rstrip(), line[match.end() :].lstrip()
        joiner = "" if not right or right[0] in ":;,.)" else " "
        return left + joiner + right, _number(match)
    return line, None


def _parse_list(text: str) -> list[_Raw]:
    """Criteria from numbered or bulleted lines, and from unbulleted lines that carry an explicit weight."""
    items: list[_Raw] = []
    for line in text.splitlines():
        bullet = _ITEM.match(line)
        content = (bullet.group(1) if bullet else line).strip()
        if weight_line := _WEIGHT_LINE.fullmatch(content):
            if items:  # "   - weight: 0.2" under an item sets that item's weight
                items[-1] = (items[-1][0], _number(weight_line), ())
            continue
        if not bullet and not any(p.match(content) for p in _LEADING) and not _MIDDLE.search(content):
            continue
        body, weight = _split_weight(content.replace("**", ""))
        body = _LABEL_PREFIX.sub("", body, count=1).strip(" \t:;,|-–—")
        if _TOTAL_LINE.fullmatch(body) or (weight is None and content.rstrip("*").endswith(":")):
            continue  # a "Total: 20 points" line or a section heading, not a criterion
        items.append((body, weight, ()))
    return items


# ------------------------------------------------------------------------------------------ validation
def _dedupe_key(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!;:,")


def _finalise(items: list[_Raw], prompt_id: str, source: str) -> Rubric:
    seen: set[str] = set()
    criteria: list[Criterion] = []
    for text, weight, tags in items:
        text = text.replace("**", "").strip()
        while len(text) >= 2 and text[0] == text[-1] and text[0] in "*_`":  # *Clarity*, `Clarity`
            text = text[1:-1].strip()
        key = _dedupe_key(text)
        # Small models repeat criteria and emit separator-only bullets; neither is a criterion.
        if key in seen or not any(ch.isalnum() for ch in text):
            continue
        seen.add(key)
        criteria.append(Criterion(text, DEFAULT_WEIGHT if weight is None else weight, tags))
    _check(criteria)
    return Rubric(tuple(criteria), source=source, prompt_id=prompt_id)


def _check(criteria: list[Criterion]) -> None:
    if not criteria:
        raise RubricParseError("no_criteria")
    if len(criteria) > MAX_CRITERIA:
        raise RubricParseError("too_many_criteria", f"{len(criteria)} > {MAX_CRITERIA}")
    if (longest := max(len(c.text) for c in criteria)) > MAX_CRITERION_CHARS:
        raise RubricParseError("criterion_too_long", f"{longest} chars > {MAX_CRITERION_CHARS}")
    if any(abs(c.weight) > MAX_ABS_WEIGHT for c in criteria):
        raise RubricParseError("absurd_weight", f"|weight| > {MAX_ABS_WEIGHT:g}")
    if all(c.weight == 0 for c in criteria):
        raise RubricParseError("all_zero_weights")
    if not any(c.weight > 0 for c in criteria):
        raise RubricParseError("no_positive_weight", "only penalties: no response can score above zero")


def _prepare(text: Any) -> str:
    if not isinstance(text, str):
        raise RubricParseError("not_text", type(text).__name__)
    if len(text) > MAX_INPUT_CHARS:
        raise RubricParseError("too_long", f"{len(text)} chars > {MAX_INPUT_CHARS}")
    # Reasoning models (Qwen3) put a <think> block before the answer; the rubric follows its end.
    text = text.rpartition("</think>")[2].strip()
    if not text:
        raise RubricParseError("empty")
    return text


def parse_rubric(text: str, prompt_id: str = "", source: str = "") -> Rubric:
    """Parse a model-written rubric from JSON or a markdown list, keeping weights as written.

    Args:
        text: The model's raw output.
        prompt_id: Id of the prompt the rubric is for, stored on the result.
        source: Who wrote the rubric (method or model name), stored on the result.

    Returns:
        A rubric with stripped, de-duplicated criteria; absent weights default to `DEFAULT_WEIGHT`.

    Raises:
        RubricParseError: With a `reason` from `REASONS` when no usable rubric can be read.

    >>> parse_rubric('[{"criterion": "Gives the dose", "points": 5}]').criteria[0].weight
    5.0
    """
    body = _prepare(text)
    list_items = _parse_list(body)
    try:
        json_items, unreadable = _parse_json(body)
    except RubricParseError:
        if not list_items:
            raise
        json_items, unreadable = [], False
    # Both readings run: JSON quoted inside a markdown list, or a bulleted preamble before a JSON rubric,
    # would otherwise win; the reading that finds more criteria is the rubric (JSON on a tie).
    items = json_items if len(json_items) >= len(list_items) else list_items
    if not items:
        raise RubricParseError("invalid_json" if unreadable else "no_criteria")
    return _finalise(items, prompt_id, source)


def normalise(rubric: Rubric) -> Rubric:
    """Rescale weights to shares of the total positive weight; penalties keep their sign and scale.

    >>> rubric = Rubric((Criterion("a", 3.0), Criterion("b", 1.0), Criterion("c", -2.0)))
    >>> [c.weight for c in normalise(rubric).criteria]
    [0.75, 0.25, -0.5]
    """
    total = math.fsum(c.weight for c in rubric.criteria if c.weight > 0)
    if not (total > 0 and math.isfinite(total)):
        raise ValueError(f"rubric {rubric.prompt_id!r} has no positive weight to normalise by")
    return replace(rubric, criteria=tuple(replace(c, weight=c.weight / total) for c in rubric.criteria))


@dataclass
class ParseTally:
    """Counts parse successes and failures by reason, so a run reports its failure rate."""

    ok: int = 0
    failures: Counter[str] = field(default_factory=Counter)

    def parse(self, text: str, prompt_id: str = "", source: str = "") -> Rubric | None:
        """Parse one output and count the outcome; None (never a zero-weight rubric) on failure."""
        try:
            rubric = parse_rubric(text, prompt_id=prompt_id, source=source)
        except RubricParseError as err:
            self.failures[err.reason] += 1
            return None
        self.ok += 1
        return rubric

    @property
    def failed(self) -> int:
        """Number of outputs that did not parse."""
        return sum(self.failures.values())

    @property
    def total(self) -> int:
        """Number of outputs seen."""
        return self.ok + self.failed

    @property
    def failure_rate(self) -> float:
        """Share of outputs that did not parse; NaN before any were seen."""
        return self.failed / self.total if self.total else math.nan

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counts for manifests and reports."""
        reasons = dict(sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0])))
        return {"ok": self.ok, "failed": self.failed, "failure_rate": self.failure_rate, "by_reason": reasons}


# ---------------------------------------------------------------------------------------------- storage
def rubric_to_json(rubric: Rubric) -> dict[str, Any]:
    """JSON-ready form of a rubric; `rubric_from_json` reads it back."""
    criteria = [{"criterion": c.text, "weight": c.weight, "tags": list(c.tags)} for c in rubric.criteria]
    return {"prompt_id": rubric.prompt_id, "source": rubric.source, "criteria": criteria}


def rubric_from_json(obj: Mapping[str, Any] | str) -> Rubric:
    """Read a rubric stored by `rubric_to_json` (a dict or its JSON text); strict, unlike `parse_rubric`."""
    data = json.loads(obj) if isinstance(obj, str) else obj
    if not isinstance(data, Mapping) or not isinstance(data.get("criteria"), list):
        raise ValueError("stored rubric: expected an object with a 'criteria' list")
    criteria = []
    for i, item in enumerate(data["criteria"]):
        item = item if isinstance(item, Mapping) else {}
        text, weight, tags = item.get("criterion"), item.get("weight"), item.get("tags", [])
        if not isinstance(text, str) or not _is_number(weight):
            raise ValueError(f"stored rubric: criteria[{i}] needs a string 'criterion' and a numeric 'weight'")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"stored rubric: criteria[{i}].tags must be a list of strings")
        criteria.append(Criterion(text, float(weight), tuple(tags)))
    return Rubric(tuple(criteria), source=str(data.get("source", "")), prompt_id=str(data.get("prompt_id", "")))
