"""Serving-side alarm events: one reading at a time, the same events as the evaluation's
`debounce` over the whole sequence, per entity, with the bundle's spec.alarms."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.models.alarms import debounce
from loopline.serving.alarm_events import ROBUST_WINDOW, AlarmEvents, policy_of, sensor_break
from loopline.types.alarms import AlarmPolicy


@pytest.mark.parametrize(("k", "n", "m"), [(3, 5, 1), (1, 1, 1), (2, 4, 2), (5, 5, 3)])
def test_streaming_equals_the_evaluation_debounce(k: int, n: int, m: int) -> None:
    rng = np.random.default_rng(k * 100 + n * 10 + m)
    flags = {e: rng.random(300) < rng.uniform(0.05, 0.7) for e in ("a", "b", "c")}
    events = AlarmEvents(k, n, m, max_entities=10)
    got: dict[str, list[bool]] = {e: [] for e in flags}
    raised = {e: 0 for e in flags}
    position = dict.fromkeys(flags, 0)
    # batches of random size interleaving the entities, each entity in its own time order
    while any(position[e] < len(flags[e]) for e in flags):
        keys, over = [], []
        for _ in range(int(rng.integers(1, 12))):
            e = str(rng.choice([e for e in flags if position[e] < len(flags[e])]))
            keys.append(e)
            over.append(bool(flags[e][position[e]]))
            position[e] += 1
            if all(position[x] >= len(flags[x]) for x in flags):
                break
        step = events.step(keys, over)
        for row, (e, active) in enumerate(zip(keys, step.active, strict=True)):
            was = got[e][-1] if got[e] else False
            got[e].append(active)
            if active and not was:
                raised[e] += 1
                assert row in step.raised
    for e, seq in flags.items():
        want = debounce(seq, k, n, m)
        assert got[e] == want.tolist(), e
        starts = int(np.count_nonzero(np.diff(np.concatenate([[0], want.astype(int)])) == 1))
        assert raised[e] == starts


def test_first_readings_of_an_entity_count_what_was_seen() -> None:
    events = AlarmEvents(3, 5, 1, max_entities=10)
    assert events.step(["m"] * 3, [True, True, True]).active == [False, False, True]
    fresh = AlarmEvents(3, 5, 1, max_entities=10)
    assert fresh.step(["m", "m"], [True, True]).active == [False, False]


def test_the_least_recently_seen_entity_is_forgotten_first() -> None:
    events = AlarmEvents(2, 3, 1, max_entities=2)
    events.step(["a", "b"], [True, True])
    events.step(["a", "c"], [False, False])  # c pushes out b, the least recently seen
    assert len(events) == 2
    assert events.step(["a"], [True]).active == [True]  # a kept its history
    assert events.step(["b"], [True]).active == [False]  # b starts afresh


def test_column_and_rows_without_an_entity() -> None:
    events = AlarmEvents(2, 3, 1, max_entities=5)
    column, raised = events.column(None, np.array([True, True, False, False, False, False]))
    assert column == [b"inactive", b"active", b"active", b"active", b"inactive", b"inactive"]
    assert raised == 1


def test_policy_from_bundle_metadata() -> None:
    assert policy_of({}) == AlarmPolicy()
    policy = policy_of({"alarms": {"window": 4, "raiseAt": 2, "clearBelow": 1}})
    assert (policy.k, policy.n, policy.m) == (2, 4, 1)
    with pytest.raises(ValueError, match="bundle metadata 'alarms'"):
        policy_of({"alarms": {"window": 2, "raiseAt": 3}})


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"alarms\.raiseAt"):
        AlarmEvents(6, 5, 1, max_entities=1)
    with pytest.raises(ValueError, match="alarm_max_entities"):
        AlarmEvents(3, 5, 1, max_entities=0)
    with pytest.raises(ValueError, match="2 entity keys for 1 rows"):
        AlarmEvents(3, 5, 1, max_entities=1).step(["a", "b"], [True])


def test_sensor_break_follows_a_level_shift_and_flags_a_break() -> None:
    rng = np.random.default_rng(0)
    history = 1.0 + 0.05 * rng.standard_normal((ROBUST_WINDOW, 3))
    assert not sensor_break(history, np.array([1.1, 0.95, 1.05]))
    assert sensor_break(history, np.array([1.0, 1.0, 0.3]))  # one sensor drops away
    assert not sensor_break(history[: ROBUST_WINDOW // 2 - 1], np.array([1.0, 1.0, 0.3]))
    holes = history.copy()
    holes[5, 2] = np.nan  # a missing reading leaves its sensor out, not the others
    assert not sensor_break(holes, np.array([1.0, 1.0, 0.3]))
    assert sensor_break(holes, np.array([3.0, 1.0, 1.0]))
    shifted = np.vstack([history[ROBUST_WINDOW // 2 :], 1.3 + 0.065 * rng.standard_normal((40, 3))])
    recent = shifted[-ROBUST_WINDOW:]
    assert not sensor_break(recent, np.array([1.35, 1.25, 1.3]))  # the new operating point
    adapted = 1.3 + 0.065 * rng.standard_normal((ROBUST_WINDOW, 3))
    assert sensor_break(adapted, np.array([1.3, 0.45, 1.3]))


def test_while_stale_the_threshold_verdict_raises_nothing_and_a_break_does() -> None:
    rng = np.random.default_rng(1)
    events = AlarmEvents(3, 5, 1, max_entities=2)
    normal = 1.0 + 0.05 * rng.standard_normal((50, 4))
    events.step(["m"] * 50, [False] * 50, normal)
    # the operating point moved by 30 %: every row over the threshold
    moved = 1.3 + 0.065 * rng.standard_normal((200, 4))
    # one reading a request, as a line sends them
    steps = [events.step(["m"], [True], moved[i : i + 1], stale=True) for i in range(200)]
    raised = [i for i, step in enumerate(steps) if step.raised]
    assert all(i < ROBUST_WINDOW for i in raised), raised  # only while adapting
    assert not any(step.active[0] for step in steps[ROBUST_WINDOW:])
    broken = moved[:5].copy()
    broken[:, 1] *= 0.35  # a tool breakage: torque drops
    fault = events.step(["m"] * 5, [True] * 5, broken, stale=True)
    assert fault.active == [False, False, True, True, True]
    assert fault.raised == [2]


def test_an_alarm_of_the_threshold_ends_when_the_model_turns_stale() -> None:
    """The threshold's verdicts just before staleness is confirmed are the drift's (every
    row over): their alarm ends at the change, and a fault right after raises its own event
    under the drift-robust rule instead of extending that one."""
    rng = np.random.default_rng(4)
    events = AlarmEvents(5, 8, 1, max_entities=2)
    normal = 1.0 + 0.05 * rng.standard_normal((ROBUST_WINDOW, 4))
    events.step(["m"] * ROBUST_WINDOW, [False] * ROBUST_WINDOW, normal)
    moved = 1.3 + 0.065 * rng.standard_normal((20, 4))
    storm = [events.step(["m"], [True], moved[i : i + 1]) for i in range(8)]
    assert [s.active[0] for s in storm] == [False] * 4 + [True] * 4
    assert events.step(["m"], [True], moved[8:9], stale=True).active == [False]
    broken = moved[9:16].copy()
    broken[:, 1] *= 0.2  # a tool breakage: torque drops
    fault = [events.step(["m"], [True], broken[i : i + 1], stale=True) for i in range(7)]
    assert [s.active[0] for s in fault] == [False] * 4 + [True] * 3
    assert [bool(s.raised) for s in fault] == [False] * 4 + [True] + [False] * 2
    # drift cleared (or a new model): the robust rule's alarm ends too
    assert events.step(["m"], [True], moved[16:17], stale=False).active == [False]


def test_rows_of_one_request_are_judged_against_the_readings_before_it() -> None:
    rng = np.random.default_rng(2)
    events = AlarmEvents(1, 1, 1, max_entities=2)
    events.step(["m"] * 40, [False] * 40, 1.0 + 0.05 * rng.standard_normal((40, 2)))
    batch = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 1.0]])
    assert events.step(["m"] * 3, [False] * 3, batch, stale=True).active == [False, True, True]
    many = 1.0 + 0.05 * rng.standard_normal((ROBUST_WINDOW + 7, 2))  # longer than the window
    events.step(["m"] * len(many), [False] * len(many), many)
    assert not events.step(["m"], [True], many[-1:], stale=True).active[0]
    assert events.step(["m"], [False], np.array([[1.0, 2.0]]), stale=True).active == [True]


def test_one_row_per_entity_is_judged_as_each_entity_alone() -> None:
    rng = np.random.default_rng(3)
    history = {e: 1.0 + 0.05 * rng.standard_normal((ROBUST_WINDOW + 9, 3)) for e in "abcd"}
    history["d"][-3, 1] = np.nan  # a missing reading in d's window
    events = AlarmEvents(1, 1, 1, max_entities=10)
    for i in range(ROBUST_WINDOW + 9):
        events.step(list(history), [False] * 4, np.stack([h[i] for h in history.values()]))
    rows = np.array([[1.0, 1.0, 1.0], [1.0, 0.5, 1.0], [1.02, 0.98, 1.04], [1.0, 0.4, 1.0]])
    got = events.step(list(history), [False] * 4, rows, stale=True).active
    want = [
        sensor_break(h[-ROBUST_WINDOW:], row) for h, row in zip(history.values(), rows, strict=True)
    ]
    assert got == want == [False, True, False, False]
