"""A hang guard that no machine is too slow for: the call runs in a thread.

It fails only when the call is still running after ``SAFETY`` seconds, a real
hang; how fast the machine is never decides a test (the work done is asserted
on by the test itself: occurrences, problems, budgets).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

SAFETY = 120.0
T = TypeVar("T")


def finishes(call: Callable[[], T], *, within: float = SAFETY) -> T:
    """Return ``call()``; fail the test if it has not returned after ``within`` s."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # re-raised in the test's thread
            failure.append(error)

    worker = threading.Thread(target=run, name="hang-guard", daemon=True)
    worker.start()
    worker.join(within)
    if worker.is_alive():
        pytest.fail(f"still running after {within:.0f} s: a hang")
    if failure:
        raise failure[0]
    return outcome[0]
