"""Durable storage for a node (SQLite WAL, checksummed)."""

from .sqlite import (
    Identity,
    SQLiteStorage,
    StorageCorrupt,
    StorageError,
    StorageMismatch,
)

__all__ = ["Identity", "SQLiteStorage", "StorageCorrupt", "StorageError", "StorageMismatch"]
