"""Content-hash cache of every generation and judgement: (kind, model, inputs, params) -> output.

Stored in one SQLite file (default `$HARNESS_CACHE_DIR/cache.sqlite`): each write is a transaction, so a
process killed mid-run loses at most the batch in flight, and a re-run recomputes nothing already stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.backends import Backend
from harness.catalog import cache_dir
from harness.types import Chat, GenerationParams


def content_key(kind: str, **parts: Any) -> str:
    """SHA-256 of a canonical JSON rendering of `kind` and `parts`.

    >>> content_key("x", a=1) == content_key("x", a=1) != content_key("x", a=2)
    True
    """
    blob = json.dumps({"kind": kind, **parts}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """A persistent key -> JSON value store."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "cache.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Return the stored values for whichever of `keys` are present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(f"SELECT key, value FROM cache WHERE key IN ({marks})", chunk):
                found[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store values in one transaction."""
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO cache (key, value) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM cache").fetchone()[0])

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()


def cached_call(cache: Cache, keys: Sequence[str], compute: Any) -> list[Any]:
    """Return a value per key, calling `compute(indices)` only for the missing ones and storing its results."""
    found = cache.get_many(keys)
    missing = [i for i, k in enumerate(keys) if k not in found]
    if missing:
        fresh = compute(missing)
        new = {keys[i]: v for i, v in zip(missing, fresh, strict=True)}
        cache.put_many(new)
        found.update(new)
    return [found[k] for k in keys]


class CachedBackend:
    """Wraps any backend so that each generation and log-probability is computed once per content key."""

    def __init__(self, inner: Backend, cache: Cache | None = None) -> None:
        self.inner = inner
        self.cache = cache if cache is not None else Cache()  # an empty Cache is falsy (__len__)
        self.model_id = inner.model_id

    def generate(self, chats: Sequence[Chat], params: GenerationParams) -> list[str]:
        """Generate, reusing cached replies."""
        keys = [content_key("generate", model=self.model_id, chat=c, params=params.to_dict()) for c in chats]
        return cached_call(self.cache, keys, lambda idx: self.inner.generate([chats[i] for i in idx], params))

    def logprobs(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Score continuations, reusing cached log-probabilities."""
        keys = [
            content_key("logprobs", model=self.model_id, chat=c, continuation=t)
            for c, t in zip(chats, continuations, strict=True)
        ]

        def compute(idx: list[int]) -> list[float]:
            return self.inner.logprobs([chats[i] for i in idx], [continuations[i] for i in idx])

        return cached_call(self.cache, keys, compute)
