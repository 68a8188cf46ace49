"""The health board under concurrent use: its lock is what keeps half-open probing, failure counts
and cooldowns right when many threads ask and report at once.

`RacyHealthBoard` is the real board whose tables let other threads run inside every check-then-act,
so these tests fail (every run, in practice) when the lock is taken away."""
from __future__ import annotations

import pytest

from errors import Category, Failure, Scope
from fallback.health import HealthBoard
from tests.conftest import ManualClock
from tests.racing import THREADS, YieldingDict, YieldingSet, race

ROUNDS = 10


class RacyHealthBoard(HealthBoard):
    def __init__(self, clock: ManualClock):
        super().__init__(clock)
        self._probing = YieldingSet()
        self._in_a_row = YieldingDict()
        self._model_cooling = YieldingDict()


def failure(category: Category = Category.RATE_LIMIT) -> Failure:
    return Failure(category=category, scope=Scope.MODEL, wait_seconds=None, message=category.value)


def test_exactly_one_half_open_probe_among_racing_askers():
    board = RacyHealthBoard(ManualClock())
    for round_ in range(ROUNDS):
        model = f"m{round_}"
        granted = race(lambda i: board.try_probe("groq", model))
        assert granted.count(True) == 1           # one request goes out; the others wait for it
        assert not board.try_probe("groq", model)
        board.end_probe("groq", model)             # the probe came back (failed): the next may go
        assert race(lambda i: board.try_probe("groq", model)).count(True) == 1
        board.end_probe("groq", model)
        board.record_success("groq", model)        # proven: everyone may send
        assert race(lambda i: board.try_probe("groq", model)) == [True] * THREADS


def test_racing_failures_are_all_counted():
    board = RacyHealthBoard(ManualClock())
    counts = race(lambda i: [board.count_failure("groq", "m") for _ in range(20)])
    assert board.in_a_row("groq", "m") == THREADS * 20
    # Each report saw its own count: no two threads were told the same number.
    assert sorted(c for thread in counts for c in thread) == list(range(1, THREADS * 20 + 1))


def test_racing_cooldowns_keep_the_longest():
    clock = ManualClock()
    board = RacyHealthBoard(clock)
    for round_ in range(ROUNDS):
        model = f"m{round_}"
        # Thread i asks for i + 1 seconds; whatever the order, the longest cooldown wins.
        race(lambda i: board.cool("groq", model, i + 1, failure(), switched=True))
        assert board.blocked("groq", model, "fp").until == pytest.approx(clock() + THREADS)
