"""Phase checkpoints: an interrupted co-evolution run resumes after its last finished phase.

After every phase the session writes `<run>/phase-checkpoint-<n>/` (n = phases finished): the trained model(s),
each AdamW state, the step counters, the judge's failure counts, the trainer's own state (its sampling RNG, parse
tallies, EvoRubric's pool) and the byte length of every JSONL log in the run directory. The directory is written
under a temporary name and renamed, so a checkpoint that exists is complete; older ones are then deleted.

Resuming cuts each log back to its recorded length, which drops the records of the phase that was interrupted;
that phase then runs again from its own seeds (every phase seeds its GRPO trainer and its sampling from the phase
index), so a resumed run trains as the uninterrupted one would have.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

PREFIX = "phase-checkpoint-"
STATE_FILE = "state.pt"
LOGS_FILE = "log_sizes.json"  # apart from the state: rewinding the logs should not read the optimizer states


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    found = [p for p in Path(run_dir).glob(f"{PREFIX}*") if re.fullmatch(rf"{PREFIX}\d+", p.name)]
    return max(found, key=lambda p: int(p.name[len(PREFIX) :]), default=None)


def log_sizes(run_dir: Path) -> dict[str, int]:
    """Byte length of every JSONL log directly in the run directory."""
    return {p.name: p.stat().st_size for p in sorted(Path(run_dir).glob("*.jsonl"))}


def rewind_logs(run_dir: Path, checkpoint: Path) -> None:
    """Cut every log back to its length at `checkpoint`; a log the checkpoint did not know is emptied."""
    sizes = json.loads((Path(checkpoint) / LOGS_FILE).read_text())
    for path in Path(run_dir).glob("*.jsonl"):
        with open(path, "r+b") as fh:
            fh.truncate(sizes.get(path.name, 0))


def save(run_dir: Path, phases_done: int, models: dict[str, Any], state: dict[str, Any]) -> Path:
    """Write checkpoint `phases_done` (models by directory name: `{"policy": (model, tokenizer), ...}`).

    `state` is pickled with `torch.save`; the log lengths are added here. Returns the checkpoint directory.
    """
    import torch

    run_dir = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=run_dir))
    for name, (model, tokenizer) in models.items():
        model.save_pretrained(tmp / name)
        tokenizer.save_pretrained(tmp / name)
    torch.save({**state, "phases_done": phases_done}, tmp / STATE_FILE)
    (tmp / LOGS_FILE).write_text(json.dumps(log_sizes(run_dir)))
    final = run_dir / f"{PREFIX}{phases_done:04d}"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    discard(run_dir, keep=final)
    return final


def load_state(checkpoint: Path) -> dict[str, Any]:
    """The state a checkpoint was saved with (our own pickle: optimizer tensors, RNG state, tallies)."""
    import torch

    return torch.load(Path(checkpoint) / STATE_FILE, weights_only=False)


def discard(run_dir: Path, keep: Path | None = None) -> None:
    """Delete the run's checkpoints (and half-written ones) except `keep`."""
    for path in Path(run_dir).glob(f"*{PREFIX}*"):
        if path != keep:
            shutil.rmtree(path, ignore_errors=True)
