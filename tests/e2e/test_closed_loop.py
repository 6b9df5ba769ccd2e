"""The project's most important test: the whole closed loop, as `loopline demo --quick` runs it.

It starts its own local control plane (as the demo does), MLflow, the operator with local
backends, model servers and the drift monitor, drives real REST and gRPC traffic, changes the
recipe and kills a sensor, then asserts the story from what was measured. Nothing is mocked.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loopline.components.steps import SINCE_DRIFT, WINDOW_BASIS_TAG
from loopline.demo.alarms import fault_outcome, stale_model_events, stale_periods
from loopline.demo.callers import answered_by
from loopline.demo.historian import CALLER as HISTORIAN
from loopline.demo.processes import tagged_pids
from loopline.demo.record import DemoRecord
from loopline.demo.scenario import Demo, DemoResult
from loopline.demo.settings import DemoSettings
from loopline.demo.traffic_stats import segment_stats
from loopline.history.timeline import serving_at
from loopline.tracking import lineage


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    state = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(state_dir=state / "state", report_dir=state / "report").quick()
    return Demo(settings, keep=False).run()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_loop_closes(quick_run: DemoResult) -> None:
    from mlflow import MlflowClient

    result = quick_run
    rec = result.record
    assert result.completed, "the demo stopped early: " + "; ".join(result.problems)

    # First champion serving, and traffic answered over both protocols before the change.
    first = result.first_champion
    assert first, "no first champion ever served"
    baseline = [r for r in rec.requests if r.segment == "baseline"]
    assert {r.protocol for r in baseline if r.ok} == {"rest", "grpc"}

    # Drift -> exactly one retraining run, with trigger drift.
    assert len(result.drift_runs) == 1, f"drift runs: {result.drift_runs}"
    assert len(rec.markers_of("retrain-requested")) == 1
    run = rec.runs[result.drift_runs[0]]
    assert run.trigger == "drift"
    assert run.model_version
    assert run.model_version != first

    # The new version beats the old one on the same fresh post-change data.
    comparison = rec.comparisons[-1]
    old, new = comparison.metrics[first], comparison.metrics[run.model_version]
    assert new["f1"] > old["f1"], comparison.metrics

    # The champion alias moved to the new version (in the registry, not only in status).
    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    champion = client.get_model_version_by_alias(result.model_uri_name, "champion")
    assert str(champion.version) == run.model_version
    assert rec.champion == run.model_version
    assert champion.run_id
    tags = client.get_run(champion.run_id).data.tags
    assert tags.get(lineage.TRIGGER) == "drift"
    assert tags.get(lineage.PARENT_VERSION) == first
    # It learnt the new recipe from the rows since the drift began, not the weeks before.
    assert tags.get(WINDOW_BASIS_TAG) == SINCE_DRIFT

    # The fallback answered while the sensor was dead, and nothing failed because of it.
    dead = segment_stats(rec)["dead-sensor"]
    assert dead.requests > 0
    assert dead.errors == 0
    assert dead.fallback_rate == 1.0

    # The report exists and every plot was drawn.
    assert result.report is not None
    assert "Not measured" not in result.report.read_text()

    # Its history section: the ledger, read as the run ended, says the new version serves.
    answer = serving_at(rec.history[f"{rec.namespace}/{rec.model}"], datetime.now(UTC))
    assert answer.state is not None
    assert answer.state.champion == run.model_version
    assert "<h2>Production history</h2>" in result.report.read_text()

    # No process left behind.
    assert result.leftovers == []
    assert tagged_pids(result.demo_id) == []


@pytest.mark.slow
def test_usage_per_caller_matches_what_was_sent(quick_run: DemoResult) -> None:
    """The servers' usage table (read from Prometheus, as `loopline usage` reads it) counts,
    per caller and version, exactly the requests each caller had answered; the historian's
    queued requests were each answered, once, a retried id included."""
    rec = quick_run.record
    assert rec.usage, "no usage table: " + "; ".join(rec.notes)
    table = {(u.caller, u.version): u for u in rec.usage}
    sent = answered_by(rec.requests, rec.async_requests)
    callers = {caller for caller, _ in sent}
    assert callers == {"gateway-rest", "gateway-grpc", HISTORIAN}, callers
    for (caller, version), (answered, rows, fallback) in sent.items():
        row = table.get((caller, version))
        assert row is not None, f"{caller} v{version} missing from {sorted(table)}"
        assert row.requests - row.errors == answered, (caller, version, row, answered)
        assert row.rows == rows, (caller, version, row, rows)
        assert row.fallback_rows == fallback, (caller, version, row, fallback)
    assert quick_run.report is not None
    assert "<h2>Model usage per caller and version</h2>" in quick_run.report.read_text()

    queued = rec.async_requests
    assert queued, "the historian queued nothing"
    ids = [a.id for a in queued]
    assert len(set(ids)) == len(ids)
    assert [a.id for a in queued if not a.ok] == []  # every one answered
    # Scored once each: the retried ids were not scored a second time.
    scored = sum(u.requests for u in rec.usage if u.caller == HISTORIAN)
    assert scored == len(ids)


@pytest.mark.slow
def test_a_fault_during_the_stale_period_is_still_reported(quick_run: DemoResult) -> None:
    """While the model is stale its threshold verdicts raise no alarm storm, and the fault
    injected then raises its own alarm event; the report says so."""
    rec = quick_run.record
    periods = stale_periods(rec.requests)
    assert periods, "the model was never stale"
    assert len(rec.injected_faults) == 1
    fault = rec.injected_faults[0]
    assert fault.end_t is not None
    outcome = fault_outcome(rec.requests, fault, periods)
    assert outcome.during_stale, (fault, periods)
    assert outcome.detected_t is not None, "the injected fault raised no alarm event"
    assert quick_run.report is not None
    assert "injected tool breakage" in quick_run.report.read_text()
    # Every other alarm event the stale model's answers started is one of the drift-robust
    # verdict's: on a labelled fault of the live traffic, or a false one within the issue's
    # false-alarm budget (1 per machine-day of readings; the plant sends a day of a machine's
    # readings every 144 requests, so the stale period holds several machine-days).
    others = [
        (t, machine, labelled)
        for t, machine, labelled in stale_model_events(rec.requests, periods)
        if not (machine == fault.machine_id and fault.start_t <= t <= fault.end_t)
    ]
    interval = DemoSettings().interval_seconds
    stale_rows = sum(r.rows for r in rec.requests if r.ok and r.model_state == "stale")
    machine_days = stale_rows * interval / 86400
    false_events = [(t, machine) for t, machine, labelled in others if not labelled]
    assert len(false_events) <= machine_days, (false_events, machine_days)


def test_report_written_even_when_the_loop_did_not_close(quick_run: DemoResult) -> None:
    assert quick_run.report is not None
    assert "Every number below" in quick_run.report.read_text()
    saved = DemoRecord.load(quick_run.report.parent / "record.json")
    assert len(saved.requests) == len(quick_run.record.requests) > 0
    assert [s.title for s in saved.steps] == [s.title for s in quick_run.record.steps]
