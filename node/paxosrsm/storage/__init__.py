"""Durable storage for a node: an append-only log (``log.py``, the default)
or SQLite in WAL mode (``sqlite.py``), both checksummed."""

from __future__ import annotations

import os
from pathlib import Path

from .log import LOG, LogStorage
from .sqlite import (
    CrashHook,
    Identity,
    SQLiteStorage,
    StorageCorrupt,
    StorageError,
    StorageMismatch,
)

Storage = LogStorage | SQLiteStorage
ENGINES = ("log", "sqlite")
DEFAULT_ENGINE = "log"


def engine_of(path: str | os.PathLike[str]) -> str | None:
    """The engine a data directory already uses (by its files), or None."""
    p = Path(path)
    if (p / "paxos.db").exists():
        return "sqlite"
    if (p / LOG).exists():
        return "log"
    return None


def open_storage(
    path: str | os.PathLike[str],
    identity: Identity,
    engine: str = DEFAULT_ENGINE,
    crash_hook: CrashHook | None = None,
) -> Storage:
    """Open a data directory with the engine it already uses; a new one
    gets ``engine``. A directory is never converted from one to the other."""
    if engine not in ENGINES:
        raise ValueError(f"unknown storage engine {engine!r} (one of {', '.join(ENGINES)})")
    found = engine_of(path) or engine
    if found == "sqlite":
        return SQLiteStorage(path, identity, crash_hook)
    return LogStorage(path, identity, crash_hook)


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Identity",
    "LogStorage",
    "SQLiteStorage",
    "Storage",
    "StorageCorrupt",
    "StorageError",
    "StorageMismatch",
    "engine_of",
    "open_storage",
]
