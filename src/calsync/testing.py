"""Helpers for testing an application that embeds calsync.

`MemoryStore` keeps everything in memory, so a test needs no database.
"""

from __future__ import annotations

from calsync._store.memory import MemoryStore

__all__ = ["MemoryStore"]
