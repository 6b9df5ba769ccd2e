"""DriftMonitor without HTTP: queue -> windows -> decisions -> requests, state across restarts."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest

from loopline.monitoring.decision import RetrainRequest
from loopline.monitoring.reference import FrameReferenceSource
from loopline.monitoring.retrain import LogRetrainRequester
from loopline.monitoring.service import DriftMonitor
from loopline.monitoring.settings import MonitorSettings
from loopline.samples import SampleBatch

NAMES = ["feed_rate", "spindle_speed", "spindle_current"]


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class FlakyRequester:
    """Fails the first `failures` deliveries (a Kubernetes API that is briefly down)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.delivered: list[RetrainRequest] = []

    def request(self, request: RetrainRequest) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("apiserver unavailable")
        self.delivered.append(request)


def frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, 3))
    data[:, 0] += shift
    df = pd.DataFrame(data, columns=NAMES)
    df["machine_id"] = [f"drill-{i % 3 + 1:02d}" for i in range(n)]
    return df


def batch(df: pd.DataFrame, decisions: list[bool] | None = None) -> SampleBatch:
    rows = [[None if np.isnan(v) else float(v) for v in r] for r in df[NAMES].to_numpy()]
    return SampleBatch(
        model="drill-ae",
        modelVersion="1",
        featureNames=NAMES,
        rows=rows,
        machineIds=list(df["machine_id"]),
        decisions=decisions,
    )


def settings(tmp_path: Path, **kw: object) -> MonitorSettings:
    base: dict[str, object] = {
        "model": "drill-ae",
        "namespace": "ns",
        "window_size": 200,
        "window_step": 100,
        "consecutive_windows": 3,
        "cooldown_seconds": 600,
        "requester": "log",
        "state_dir": tmp_path / "state",
        "persist_seconds": 0,
    }
    base.update(kw)
    return MonitorSettings(**base)  # type: ignore[arg-type]


def monitor(tmp_path: Path, requester: object, clock: Clock, **kw: object) -> DriftMonitor:
    return DriftMonitor(
        settings(tmp_path, **kw),
        reference_source=FrameReferenceSource(frame(2000, 0), version="1"),
        requester=requester,  # type: ignore[arg-type]
        clock=clock,
    )


def feed(mon: DriftMonitor, clock: Clock, seeds: range, shift: float = 0.0) -> None:
    """One batch of 100 rows per seed, processed as it comes, 10 s apart."""
    for seed in seeds:
        mon.submit(batch(frame(100, seed, shift=shift)))
        mon.process()
        clock.t += 10


def test_stationary_then_shift_yields_one_request(tmp_path: Path) -> None:
    clock, req = Clock(), LogRetrainRequester()
    mon = monitor(tmp_path, req, clock)
    feed(mon, clock, range(100, 120))
    assert mon.state.windows_tested == 19
    assert req.requests == []
    feed(mon, clock, range(200, 220), shift=1.5)
    assert len(req.requests) == 1
    assert req.requests[0].features == ["feed_rate"]
    assert mon.state.decision == "cooldown"
    text = generate_latest(mon.metrics.registry).decode()
    assert 'loopline_retraining_requests_total{model="drill-ae",trigger="drift"} 1.0' in text
    assert 'loopline_drift_feature_detected{feature="feed_rate",model="drill-ae"} 1.0' in text


def test_restart_keeps_count_cooldown_and_window(tmp_path: Path) -> None:
    clock, req = Clock(), LogRetrainRequester()
    mon = monitor(tmp_path, req, clock)
    mon.submit(batch(frame(200, 1, shift=1.5)))
    mon.submit(batch(frame(100, 2, shift=1.5)))
    mon.process()
    mon.submit(batch(frame(50, 3, shift=1.5)))  # half a step: in the window, not yet tested
    mon.stop()
    assert mon.state.consecutive == 2
    assert req.requests == []

    again = monitor(tmp_path, req, clock)
    assert again.state.consecutive == 2
    assert again.window.rows.shape[0] == 200
    assert again.window.since_test == 50
    again.submit(batch(frame(50, 4, shift=1.5)))
    again.process()
    assert len(req.requests) == 1
    assert again.state.requests == 1
    again.stop()

    third = monitor(tmp_path, req, clock)
    for i in range(5):
        third.submit(batch(frame(100, 10 + i, shift=1.5)))
        third.process()
    assert len(req.requests) == 1, "cooldown survived the restart"
    assert third.state.decision == "cooldown"


def test_failed_delivery_is_retried_then_survives_restart(tmp_path: Path) -> None:
    clock = Clock()
    flaky = FlakyRequester(failures=1000)
    mon = monitor(tmp_path, flaky, clock, consecutive_windows=1)
    mon.submit(batch(frame(200, 1, shift=2.0)))
    mon.process()
    assert mon.state.pending_request is not None
    assert "apiserver unavailable" in mon.last_error
    mon.stop()
    flaky.failures = 0
    again = monitor(tmp_path, flaky, clock, consecutive_windows=1)
    again.process()
    assert [r.request_id for r in flaky.delivered] == ["drift-drill-ae-v1-w1"]
    assert again.state.pending_request is None


def test_new_reference_version_rearms(tmp_path: Path) -> None:
    clock, req = Clock(), LogRetrainRequester()
    source = FrameReferenceSource(frame(2000, 0), version="1")
    mon = DriftMonitor(
        settings(tmp_path, consecutive_windows=1),
        reference_source=source,
        requester=req,
        clock=clock,
    )
    mon.submit(batch(frame(200, 1, shift=1.5)))
    mon.process()
    assert len(req.requests) == 1
    source.set(frame(2000, 5, shift=1.5), version="2")
    assert mon.reload_reference()
    assert mon.state.reference_version == "2"
    assert mon.state.cooldown_until > clock.t  # re-armed, still rate-limited
    mon.submit(batch(frame(200, 6, shift=1.5)))
    mon.process()
    assert mon.state.decision == "stable"
    assert len(req.requests) == 1


class NotYetSource(FrameReferenceSource):
    """A champion alias that does not exist until `publish` (its rollout has not finished)."""

    published = False

    def current_version(self) -> str:
        if not self.published:
            raise LookupError("alias champion not found")
        return super().current_version()


def test_without_a_reference_the_monitor_looks_for_one_more_often(tmp_path: Path) -> None:
    clock = Clock()
    source = NotYetSource(frame(2000, 0), version="1")
    mon = DriftMonitor(
        settings(tmp_path, reference_poll_seconds=60),
        reference_source=source,
        requester=LogRetrainRequester(),
        clock=clock,
    )
    assert mon.reference is None
    assert "alias champion not found" in mon.last_error
    mon._poll_reference()
    source.published = True
    clock.t += 4
    mon._poll_reference()
    assert mon.reference is None  # polled a moment ago
    clock.t += 2
    mon._poll_reference()
    assert mon.reference is not None  # 6 s, not the 60 s poll
    # Once it has one, the usual period applies.
    source.set(frame(2000, 1), version="2")
    clock.t += 30
    mon._poll_reference()
    assert mon.reference.version == "1"
    clock.t += 31
    mon._poll_reference()
    assert mon.reference.version == "2"


def test_overflow_drops_oldest_and_missing_counted(tmp_path: Path) -> None:
    clock = Clock()
    mon = monitor(tmp_path, LogRetrainRequester(), clock, queue_rows=150)
    df = frame(100, 1)
    df.loc[:9, "spindle_speed"] = np.nan
    decisions = [i % 4 == 0 for i in range(100)]
    assert mon.submit(batch(df, decisions)) == {"accepted": 100, "dropped": 0}
    assert mon.submit(batch(frame(100, 2))) == {"accepted": 100, "dropped": 50}
    assert mon.dropped == 50
    assert len(mon.queue) == 150
    assert mon.anomaly_rate() == pytest.approx(0.25)
    text = generate_latest(mon.metrics.registry).decode()
    assert (
        'loopline_monitor_missing_values_total{feature="spindle_speed",model="drill-ae"} 10.0'
        in text
    )
    assert 'loopline_monitor_samples_dropped_total{model="drill-ae"} 50.0' in text
    assert 'loopline_monitor_anomalies_total{machine="drill-01",model="drill-ae"} 9.0' in text


def test_batch_with_other_feature_order_and_extra_columns_is_aligned(tmp_path: Path) -> None:
    mon = monitor(tmp_path, LogRetrainRequester(), Clock())
    b = SampleBatch(
        model="drill-ae",
        modelVersion="1",
        featureNames=["spindle_current", "extra", "feed_rate"],
        rows=[[3.0, 9.0, 1.0]],
    )
    mon.submit(b)
    row = mon.queue.snapshot()[0]
    assert row[0] == 1.0
    assert np.isnan(row[1])
    assert row[2] == 3.0


def test_settings_from_the_model_spec_and_env_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    from loopline.monitoring.settings import env_for_model, settings_for_model
    from loopline.types.model import MonitoringSpec

    spec = MonitoringSpec.model_validate(
        {"detector": "mmd", "pValue": 0.02, "windowSize": 800, "cooldownSeconds": 900,
         "retrainOnDrift": True}
    )  # fmt: skip
    direct = settings_for_model("plant", "drill-ae", spec)
    assert (direct.detector, direct.window_size, direct.step) == ("mmd", 800, 400)
    env = env_for_model("plant", "drill-ae", spec)
    assert env["LOOPLINE_MONITOR_RETRAIN_ON_DRIFT"] == "true"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert MonitorSettings() == direct
    with pytest.raises(ValueError, match="window_step"):
        MonitorSettings(window_size=100, window_step=200)


def test_champion_promoted_while_the_monitor_was_down_rearms_on_start(tmp_path: Path) -> None:
    clock, req = Clock(), LogRetrainRequester()
    mon = monitor(tmp_path, req, clock, consecutive_windows=1)
    mon.submit(batch(frame(200, 1, shift=1.5)))
    mon.process()
    mon.stop()
    assert mon.state.decision == "retrain-requested"
    assert mon.state.cooldown_until > clock.t
    restarted = DriftMonitor(
        settings(tmp_path, consecutive_windows=1),
        reference_source=FrameReferenceSource(frame(2000, 9, shift=1.5), version="2"),
        requester=req,
        clock=clock,
    )
    assert restarted.state.reference_version == "2"
    assert restarted.state.decision == "rearmed"
    assert restarted.state.cooldown_until == mon.state.cooldown_until
    assert restarted.state.requests == 1, "history is kept, only the count starts over"
    text = generate_latest(restarted.metrics.registry).decode()
    assert 'loopline_monitor_reference_info{model="drill-ae",version="2"} 1.0' in text


def test_the_request_says_when_the_drifted_data_began_arriving_even_across_a_restart(
    tmp_path: Path,
) -> None:
    """driftStart is what a drift-triggered run trains from: no later than the shift (or the
    run would miss the new operating point's first rows) and no earlier than the one window
    step before it that a half-shifted window holds."""
    clock, req = Clock(), LogRetrainRequester()
    mon = monitor(tmp_path, req, clock)
    feed(mon, clock, range(100, 110))
    shift_at = clock.t
    feed(mon, clock, range(300, 301), shift=1.5)
    oldest = mon.window.oldest_arrival()
    mon.stop()

    again = monitor(tmp_path, req, clock)  # the window's arrival times come back from disk
    assert again.window.oldest_arrival() == oldest
    feed(again, clock, range(301, 305), shift=1.5)
    assert len(req.requests) == 1
    began = datetime.fromisoformat(req.requests[0].drift_start).timestamp()
    assert shift_at - 10 <= began <= shift_at
    assert json.loads(req.requests[0].reason_json())["driftStart"] == req.requests[0].drift_start


def test_a_fresh_monitor_dates_the_drift_from_the_shift_inside_its_first_window(
    tmp_path: Path,
) -> None:
    """No stable window yet (the demo's monitor fills its first window across the recipe
    change): the drift's start is when the rows after the shift in the most drifted feature
    arrived, not the window's oldest row, which is old-recipe data."""
    clock, req = Clock(), LogRetrainRequester()
    mon = monitor(tmp_path, req, clock)
    t0 = clock.t
    mon.submit(batch(frame(100, 1)))
    mon.process()
    clock.t += 10
    mixed = pd.concat([frame(50, 2), frame(50, 3, shift=3.0)], ignore_index=True)
    mon.submit(batch(mixed))
    mon.process()
    assert mon.state.windows_tested == 1
    assert mon.state.consecutive == 1
    assert datetime.fromisoformat(mon.state.drift_start).timestamp() == t0 + 10


def test_the_operator_reads_confirmed_and_settled_drift_from_the_status(tmp_path: Path) -> None:
    """What `Drifted` is built from, read from a real monitor's status document: a confirmed
    drift after K drifted windows, not after one; settled after K stable windows."""
    from loopline.operators.backends.monitoring import drift_check_of

    clock, req = Clock(), LogRetrainRequester()
    mon = monitor(tmp_path, req, clock, consecutive_windows=3)
    assert drift_check_of(mon.status()) is None  # nothing tested yet
    feed(mon, clock, range(100, 106))
    check = drift_check_of(mon.status())
    assert check is not None
    assert (check.confirmed, check.settled) == (False, True)
    feed(mon, clock, range(200, 202), shift=1.5)
    check = drift_check_of(mon.status())
    assert check is not None
    assert mon.state.decision == "suspect"
    assert (check.confirmed, check.settled, check.features) == (False, False, ["feed_rate"])
    feed(mon, clock, range(202, 206), shift=1.5)
    check = drift_check_of(mon.status())
    assert check is not None
    assert (check.confirmed, check.settled) == (True, False)
    feed(mon, clock, range(300, 306))
    check = drift_check_of(mon.status())
    assert check is not None
    assert (check.confirmed, check.settled) == (False, True)
    assert drift_check_of({"lastWindowEnd": "not a time"}) is None
