"""Batch scoring runs in the usage table: counted per model, version and caller."""

from __future__ import annotations

import pytest

from loopline.batch.plan import BatchError, batch_caller
from loopline.monitoring.batch_usage import BatchRun, batch_rows
from loopline.monitoring.usage import Scope, as_text


def run(caller: str, status: str = "FINISHED", rows: float = 100, **kw: str) -> BatchRun:
    tags = {
        "loopline.model": kw.get("model", "drill-ae"),
        "loopline.namespace": kw.get("namespace", "plant"),
        "loopline.model_version": kw.get("version", "3"),
        "loopline.batch.caller": caller,
        "loopline.data_rows": str(rows),
        "loopline.batch.fallback_rows": "10",
    }
    return BatchRun.of(tags, status)


def test_runs_are_summed_per_version_and_caller_failed_ones_as_errors() -> None:
    runs = [
        run("planning"),
        run("planning", rows=50),
        run("planning", status="FAILED", rows=0),
        run("qa", version="2"),
        run("qa", status="RUNNING"),  # not done: not counted yet
        run("qa", model="press-ae"),
        run("qa", namespace="lab"),
    ]
    rows = batch_rows(runs, Scope("drill-ae", "plant"))
    assert [(r.version, r.caller, r.requests, r.server_errors, r.rows) for r in rows] == [
        ("2", "qa", 1, 0, 100),
        ("3", "planning", 3, 1, 150),
    ]
    planning = rows[1]
    assert planning.fallback_rows == 30
    assert planning.source == "batch"
    assert planning.p50_seconds is None
    assert "planning (batch)" in as_text(rows)
    # no scope: every model; namespaces merge, as the model servers' `model` label does
    assert len(batch_rows(runs)) == 4


def test_a_run_from_before_the_caller_tag_is_batch() -> None:
    tags = {"loopline.model": "drill-ae", "loopline.model_version": "1"}
    assert BatchRun.of(tags, "FINISHED").caller == "batch"
    assert BatchRun.of({**tags, "loopline.data_rows": "x"}, "FINISHED").rows == 0


def test_the_batch_caller_is_a_label_and_cannot_claim_a_verified_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert batch_caller("planning team") == "planning_team"
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    assert batch_caller(None) == "alice"

    def no_user() -> str:
        raise KeyError("uid 10001 has no passwd entry")

    monkeypatch.setattr("getpass.getuser", no_user)
    assert batch_caller(None) == "batch"
    assert batch_caller("  ") == "batch"
    for claimed in ("sa:plant/historian", "user:alice", "unauthenticated"):
        with pytest.raises(BatchError, match="--caller"):
            batch_caller(claimed)


def test_scheduled_runs_are_left_to_the_operators_series_and_cannot_be_claimed() -> None:
    """A scheduled run is counted by the operator (caller `schedule`, source batch); its MLflow
    run is left out of the table unless asked for, so `loopline usage --tracking-uri` counts
    it once. A person cannot name themselves `schedule`."""
    runs = [run("planning"), run("schedule"), run("schedule", status="FAILED")]
    assert [r.caller for r in batch_rows(runs)] == ["planning"]
    everything = batch_rows(runs, skip_scheduled=False)
    assert [(r.caller, r.requests, r.server_errors) for r in everything] == [
        ("planning", 1, 0),
        ("schedule", 2, 1),
    ]
    with pytest.raises(BatchError, match="--caller 'schedule'"):
        batch_caller("schedule")


def test_a_scheduled_run_spec_scores_as_the_schedule_and_a_submitted_one_as_batch() -> None:
    from datetime import UTC, datetime

    from loopline.components.batch_steps import batch_request
    from loopline.types.batch import BatchRunSpec

    base = {
        "runId": "r1", "namespace": "plant", "modelName": "drill-ae",
        "registeredModelName": "plant.drill-ae", "mlflowTrackingUri": "http://m",
        "featureRepo": "/srv/repo",
    }  # fmt: skip
    scheduled = BatchRunSpec.model_validate(
        {**base, "scheduledTime": datetime(2026, 3, 2, tzinfo=UTC)}
    )
    assert batch_request(scheduled).caller == "schedule"
    assert batch_request(BatchRunSpec.model_validate(base)).caller == "batch"
