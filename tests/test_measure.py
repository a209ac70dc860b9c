"""aimass.measure's timing helper: what settle=True adds before the timed calls."""

from __future__ import annotations

import time

from aimass.measure import SETTLE_S, time_calls


def test_settle_pauses_and_makes_one_untimed_call_first() -> None:
    calls: list[float] = []
    start = time.perf_counter()
    times = time_calls(lambda: calls.append(time.perf_counter()), seconds=0.0, min_calls=2, settle=True)
    assert len(times) == 2 and len(calls) == 3  # the first call is not timed
    assert calls[0] - start >= SETTLE_S  # other models' idle threads get time to stop spinning


def test_without_settle_every_call_is_timed() -> None:
    calls: list[int] = []
    times = time_calls(lambda: calls.append(1), seconds=0.0, min_calls=3, max_calls=3)
    assert len(times) == len(calls) == 3
