"""The ``calsync`` command line."""

from __future__ import annotations

from calsync.cli.commands import main

__all__ = [
    "main",
]
