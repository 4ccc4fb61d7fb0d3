"""Placeholder: the schedule grammar lands here."""

from __future__ import annotations

__all__ = ["Schedule"]


class Schedule:
    """Placeholder."""
