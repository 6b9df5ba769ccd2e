"""The demo's stale period and alarm events: recorded from the model server's own response
encoding (REST body and gRPC message), then shown by the live view and the report."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from loopline.data.schema import ENTITY, IS_FAULT
from loopline.demo.alarms import (
    AlarmTracker,
    alarm_events_by_machine,
    clock,
    fault_outcome,
    stale_model_events,
    stale_periods,
)
from loopline.demo.clients import Answer, RestClient, grpc_outputs
from loopline.demo.live import render
from loopline.demo.record import DemoRecord, InjectedFault, RequestSample
from loopline.demo.report import write_report
from loopline.demo.traffic import Plant, PlantStream
from loopline.demo.traffic_stats import segment_stats
from loopline.serving.scoring import OutputColumn, ScoredBatch, output_columns
from loopline.serving.v2_grpc import response_message
from loopline.serving.v2_json import response_json

MACHINES = ["m1", "m2", "m3"]
TASK = "anomaly-detection"


@dataclass(frozen=True)
class Step:
    """What the server answers at one step: its version, state, verdicts and alarms."""

    version: str
    state: str
    anomalous: tuple[bool, bool, bool]
    alarm: tuple[bool, bool, bool]


def _script() -> list[Step]:
    """Ten ok steps (m2 alarms once), twenty stale steps where the old model flags every row
    and a fault on m3 still raises one event, ten steps of the new champion."""
    steps = []
    for i in range(40):
        if i < 10:
            m2 = 3 <= i <= 6
            steps.append(Step("1", "ok", (False, m2, False), (False, 4 <= i <= 7, False)))
        elif i < 30:
            steps.append(Step("1", "stale", (True, True, True), (False, False, 20 <= i <= 24)))
        else:
            steps.append(Step("2", "ok", (False, False, False), (False, False, False)))
    return steps


def _columns(step: Step) -> list[OutputColumn]:
    """The server's outputs for one step, built by the serving code itself."""
    n = len(MACHINES)
    scored = ScoredBatch(
        outputs={
            "anomaly_score": np.array([5.0 if a else 0.5 for a in step.anomalous], np.float32),
            "threshold": np.ones(n, np.float32),
            "is_anomaly": np.array(step.anomalous),
        },
        fallback=np.zeros(n, dtype=bool),
        labels={
            "model_state": [step.state.encode()] * n,
            "alarm_event": [b"active" if a else b"inactive" for a in step.alarm],
        },
    )
    return output_columns(scored, TASK, step.version)


class _ScriptedServer:
    """An httpx transport answering each request with the next step's V2 response body."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = iter(steps)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = next(self.steps)
        body = response_json("drill-ae", step.version, None, _columns(step))
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})


def _batch(i: int) -> pd.DataFrame:
    """Step i's readings; m3 is in a labelled fault (generator's truth) at steps 19-25."""
    fault = [0, 0, int(19 <= i <= 25)]
    return pd.DataFrame({ENTITY: MACHINES, "s1": [1.0, 2.0, 3.0], IS_FAULT: fault})


def _run(monkeypatch: pytest.MonkeyPatch, until: int = 40) -> DemoRecord:
    """Send `until` steps of the script through the real REST client; step i at t = i s."""
    record = DemoRecord(model="drill-ae")
    now = [0.0]
    monkeypatch.setattr(DemoRecord, "now", lambda self: now[0])
    client = RestClient("http://server", "drill-ae", ["s1"])
    client._http = httpx.Client(transport=httpx.MockTransport(_ScriptedServer(_script())))
    # `send` scores one batch and never reads the stream
    plant = Plant(
        cast(PlantStream, None), [client], record, trace_machine="m3", trace_features=["s1"]
    )
    for i in range(until):
        now[0] = float(i)
        record.set_segment("baseline" if i < 10 else "recipe-change" if i < 30 else "after")
        assert plant.send(client, _batch(i)) is not None
    record.mark("recipe-change", "recipe B", t=9.0)
    record.mark("promoted", "version 2", t=29.5)
    return record


def test_rest_and_grpc_carry_model_state_and_alarm_event() -> None:
    step = _script()[20]
    rest = Answer.from_outputs(
        {
            o["name"]: o["data"]
            for o in httpx.Response(
                200, content=response_json("m", "1", None, _columns(step))
            ).json()["outputs"]
        }
    )
    for use_raw in (False, True):
        reply = response_message("m", "1", "id", _columns(step), use_raw=use_raw)
        assert Answer.from_outputs(grpc_outputs(reply)) == rest
    assert rest.model_state == ["stale"] * 3
    assert rest.alarm_event == ["inactive", "inactive", "active"]
    assert (rest.state, rest.stale_anomalies, rest.anomalies) == ("stale", 3, 3)
    ok = Answer.from_outputs({"is_anomaly": [True], "model_state": [b"ok"]})
    assert (ok.state, ok.stale_anomalies) == ("ok", 0)
    assert Answer.from_outputs({"is_anomaly": [True]}).state == ""  # an older server


def test_alarm_tracker_counts_each_event_once() -> None:
    tracker = AlarmTracker()
    assert tracker.starts(["a", "b"], ["active", "inactive"]) == ["a"]
    assert tracker.starts(["a", "b"], ["active", "active"]) == ["b"]
    assert tracker.starts(["a", "b"], ["inactive", "active"]) == []
    assert tracker.starts(["a", "a"], ["active", "active"]) == ["a"]  # two rows of one machine


def test_plant_records_the_stale_period(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _run(monkeypatch)
    script = _script()
    states = [r.model_state for r in record.requests]
    assert states == [s.state for s in script]
    starts = {i: r.alarm_starts for i, r in enumerate(record.requests) if r.alarm_starts}
    assert starts == {4: ["m2"], 20: ["m3"]}
    faults = {
        i: r.fault_alarm_starts for i, r in enumerate(record.requests) if r.fault_alarm_starts
    }
    assert faults == {20: ["m3"]}  # m2's event in the baseline is on no labelled fault
    assert [r.alarm_rows for r in record.requests] == [sum(s.alarm) for s in script]
    assert [p.model_state for p in record.trace] == [s.state for s in script]
    assert [p.alarm for p in record.trace] == [s.alarm[2] for s in script]

    (period,) = stale_periods(record.requests)
    stale = [s for s in script if s.state == "stale"]
    assert (period.start_t, period.end_t) == (10.0, 30.0)
    assert (period.versions, period.successor) == (["1"], "2")
    assert period.requests == len(stale)
    assert period.held_back == period.anomalous_rows == sum(sum(s.anomalous) for s in stale)
    assert (period.alarm_events, period.alarm_machines, period.fault_alarm_events) == (1, ["m3"], 1)
    seg = segment_stats(record)
    assert (seg["recipe-change"].held_back_rate, seg["recipe-change"].alarm_events) == (1.0, 1)
    assert (seg["baseline"].held_back_rate, seg["baseline"].alarm_events) == (0.0, 1)
    assert (seg["after"].held_back_rate, seg["after"].alarm_events) == (0.0, 0)
    assert alarm_events_by_machine(record.requests, [period]) == {
        "m2": {"before": 1, "during": 0, "after": 0},
        "m3": {"before": 0, "during": 1, "after": 0},
    }


def test_stale_answers_with_gaps_make_separate_periods(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _run(monkeypatch)
    far = [r.model_copy(update={"t": r.t + 100.0 if r.t >= 20 else r.t}) for r in record.requests]
    periods = stale_periods(far, gap_s=10.0)
    assert [(p.start_t, p.end_t) for p in periods] == [(10.0, 19.0), (120.0, 130.0)]
    assert [p.successor for p in periods] == ["", "2"]
    assert sum(p.held_back for p in periods) == 60


def _text(record: DemoRecord, now: float) -> str:
    console = Console(file=io.StringIO(), width=160)
    console.print(render(record.snapshot(), now=now))
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_live_view_shows_the_stale_period_not_alarms(monkeypatch: pytest.MonkeyPatch) -> None:
    during = _run(monkeypatch, until=26)  # steps 0-25: stale since step 10
    text = _text(during, 25.0)
    since = clock(during.started_at, 10.0)
    held = 3 * 16
    assert (
        f"model stale since {since} UTC (version 1): {held} anomalous rows held back, 1 alarm event (1 on a labelled fault)"
        in text
    )
    assert "(model stale: held back)" in text
    assert f"{clock(during.started_at, 20.0)} alarm event: m3" in text
    assert f"{clock(during.started_at, 4.0)} alarm event: m2" in text

    after = _run(monkeypatch)
    text = _text(after, 45.0)  # the last 10 s hold only the new champion's answers
    since, until = clock(after.started_at, 10.0), clock(after.started_at, 30.0)
    assert f"model was stale {since}-{until} UTC (version 1, then version 2): 60 anomalous" in text
    assert "model state: ok" in text
    assert "(model stale: held back)" not in text


def _cells(doc: str, first: str) -> list[str]:
    row = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", doc)
    assert row, first
    return re.findall(r"<td>(.*?)</td>", row.group(1))


def test_report_shows_the_stale_period_and_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record = _run(monkeypatch)
    record.ended_t = 40.0
    doc = write_report(record, tmp_path).read_text()
    assert (tmp_path / "alarms.png").stat().st_size > 5_000
    assert "src='alarms.png'" in doc
    start = f"10.0 ({clock(record.started_at, 10.0)})"
    cells = _cells(doc, start)
    (
        until,
        seconds,
        version,
        successor,
        promoted,
        rows,
        anomalous,
        held,
        events,
        faults,
        machines,
    ) = cells
    assert until == f"30.0 ({clock(record.started_at, 30.0)})"
    assert (seconds, version, successor, promoted) == ("20.0", "1", "2", "29.5")
    assert (rows, anomalous, held, events, faults, machines) == ("60", "60", "60", "1", "1", "m3")
    # the segment table: rows, held back % and alarm events of the recipe-change segment
    segment = _cells(doc, "recipe-change")
    assert (segment[1], segment[-2], segment[-1]) == ("60", "100.0", "1")
    assert _cells(doc, "m2") == ["1", "0", "0"]
    assert _cells(doc, "m3") == ["0", "1", "0"]


def test_report_without_model_state_says_so(tmp_path: Path) -> None:
    record = DemoRecord()
    record.add_request(
        RequestSample(t=1.0, protocol="rest", latency_s=0.01, rows=3, ok=True, anomalies=3)
    )
    doc = write_report(record, tmp_path).read_text()
    assert "the model server sent no model_state" in doc
    assert not (tmp_path / "alarms.png").exists()


def _with_fault(monkeypatch: pytest.MonkeyPatch) -> DemoRecord:
    """The scripted run, with m3's labelled fault (steps 19-25) recorded as injected."""
    record = _run(monkeypatch)
    record.add_injected_fault(
        InjectedFault(kind="tool_breakage", machine_id="m3", start_t=19.0, end_t=25.0, readings=7)
    )
    return record


def test_the_injected_fault_is_found_in_the_stale_period(monkeypatch: pytest.MonkeyPatch) -> None:
    record = _with_fault(monkeypatch)
    periods = stale_periods(record.requests)
    outcome = fault_outcome(record.requests, record.injected_faults[0], periods)
    assert outcome.during_stale
    assert (outcome.detected_t, outcome.detected_state) == (20.0, "stale")
    # m2's event (step 4) came before the stale period: only m3's is the stale model's
    assert stale_model_events(record.requests, periods) == [(20.0, "m3", True)]

    missed = InjectedFault(kind="bearing_wear", machine_id="m1", start_t=12.0, end_t=14.0)
    assert fault_outcome(record.requests, missed, periods).detected_t is None
    outside = InjectedFault(kind="bearing_wear", machine_id="m2", start_t=3.0, end_t=5.0)
    assert not fault_outcome(record.requests, outside, periods).during_stale


def test_live_view_and_report_show_the_injected_fault(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    record = _with_fault(monkeypatch)
    at = clock(record.started_at, 19.0)
    sentence = (
        f"injected tool breakage on m3 at {at} UTC (7 readings, during the stale period): "
        f"alarm event at {clock(record.started_at, 20.0)} UTC (1.0 s later, model stale)"
    )
    assert sentence in _text(record, 26.0)
    record.ended_t = 40.0
    doc = write_report(record, tmp_path).read_text()
    assert sentence in doc
    assert _cells(doc, f"20.0 ({clock(record.started_at, 20.0)})") == ["m3", "the injected fault"]
