"""A bounded fuzz run in every test run: mutated corpus feeds parse safely.

The same inputs and check as ``nox -s fuzz`` (tests/fuzz_parse.py), a fixed
few hundred of them: each gives a result or a `CalsyncError`, and a parse
through a `ParseCache` equals the whole parse.
"""

from __future__ import annotations

import pytest

from _fuzzing import check, mutated, sources
from calsync import ParseCache

INPUTS = range(240)
POOL = sources()


@pytest.mark.parametrize("first", range(0, len(INPUTS), 40))
def test_mutated_corpus_feeds_parse_to_results_or_calsync_errors(first: int) -> None:
    caches: dict[int, ParseCache] = {}
    for number in INPUTS[first : first + 40]:
        source, body, how = mutated(number, POOL)
        try:
            check(body, caches.setdefault(source, ParseCache()))
        except Exception as error:
            pytest.fail(
                f"input {number} ({how}): {error!r}; replay: "
                f"python tests/fuzz_parse.py --replay {number}"
            )


def test_fuzz_inputs_are_the_same_on_every_run() -> None:
    assert mutated(7, POOL) == mutated(7, POOL)
    assert len({mutated(n, POOL)[2] for n in range(50)}) > 10
