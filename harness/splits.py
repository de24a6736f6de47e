"""Deterministic train/eval folds, so a trained reward method never sees the items it is evaluated on."""

from __future__ import annotations

import hashlib

TRAIN, EVAL = "train", "eval"


def fold(key: str, train_fraction: float = 0.5, salt: str = "reward-harness-v1") -> str:
    """Assign `key` (e.g. a prompt id) to the train or eval fold by hashing it.

    The assignment depends only on the key, so it is stable across runs, machines and dataset orderings.

    >>> fold("c5f6bb12-a633-4ee4-b6a8-e6f9539472dc") in ("train", "eval")
    True
    """
    if not 0.0 <= train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in [0, 1], got {train_fraction}")
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return TRAIN if int.from_bytes(digest[:8], "big") / 2**64 < train_fraction else EVAL
