"""The bounded queue drops the oldest rows and counts them; the window tests every step."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.monitoring.window import SampleQueue, SlidingWindow


def rows(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float64).reshape(n, 1)


def test_queue_drops_oldest_and_counts() -> None:
    q = SampleQueue(capacity=10, width=1)
    assert q.put(rows(0, 6)) == 0
    assert q.put(rows(6, 6)) == 2
    assert len(q) == 10
    assert q.take(3)[:, 0].tolist() == [2, 3, 4]
    assert q.put(rows(12, 25)) == 7 + 15
    assert q.snapshot()[:, 0].tolist() == list(range(27, 37))
    assert q.take(100).shape == (10, 1)
    assert len(q) == 0


def test_queue_rejects_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"shape \[n, 1\]"):
        SampleQueue(5, 1).put(np.zeros((2, 3)))


def test_window_due_every_step_once_full() -> None:
    w = SlidingWindow(size=10, step=4, width=1)
    tests = []
    q = SampleQueue(1000, 1)
    q.put(rows(0, 30))
    while True:
        chunk = q.take(w.room())
        if chunk.shape[0]:
            w.add(chunk)
        if w.due():
            tests.append(w.rows[:, 0].tolist())
            w.mark_tested()
        elif chunk.shape[0] == 0:
            break
    # first test when 10 rows are in, then every 4 new rows
    assert [t[-1] for t in tests] == [9, 13, 17, 21, 25, 29]
    assert all(len(t) == 10 for t in tests)


def test_window_knows_when_its_oldest_row_arrived() -> None:
    w = SlidingWindow(size=10, step=5, width=1)
    assert w.oldest_arrival() is None
    w.add(rows(0, 6), now=100.0)
    w.add(rows(6, 6), now=110.0)  # pushes the first two rows out
    assert w.rows[:, 0].tolist() == list(range(2, 12))
    assert w.arrivals.tolist() == [100.0] * 4 + [110.0] * 6
    assert w.oldest_arrival() == 100.0
    w.add(rows(12, 5), now=120.0)
    assert w.oldest_arrival() == 110.0
    # Restored rows whose arrival is unknown say so instead of inventing a time.
    restored = SlidingWindow(size=10, step=5, width=1, rows=rows(0, 10))
    assert restored.oldest_arrival() is None


def test_change_point_finds_a_step_and_ignores_missing_values() -> None:
    from loopline.monitoring.window import change_point

    x = np.r_[np.zeros(70), np.ones(30)]
    assert change_point(x) == 70
    x[[10, 80]] = np.nan  # a dead sensor's gaps do not move it
    assert change_point(x) == 70
    rng = np.random.default_rng(0)
    noisy = np.r_[rng.normal(0, 1, 300), rng.normal(2, 1, 200)]
    assert abs(change_point(noisy) - 300) <= 5
    assert change_point(np.ones(10)) == 0  # nothing shifted
    assert change_point(np.array([np.nan, 1.0])) == 0


def test_shift_arrival_is_when_the_rows_after_the_shift_arrived() -> None:
    w = SlidingWindow(size=100, step=50, width=2)
    w.add(np.zeros((60, 2)), now=100.0)
    shifted = np.zeros((40, 2))
    shifted[:, 1] = 5.0
    w.add(shifted, now=130.0)
    assert w.shift_arrival(1) == 130.0
    assert w.oldest_arrival() == 100.0
