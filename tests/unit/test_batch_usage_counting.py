"""Scheduled batch runs counted for model usage: once per run, in the status write that ends
it, so neither a repeated reconcile nor an operator restart counts a run twice or loses it."""

from __future__ import annotations

from datetime import UTC, datetime

from loopline.operators.builders.batch import BatchObservation, plan_batch, rejected
from loopline.operators.builders.batch_usage import count_run
from loopline.operators.builders.runs import RunContext
from loopline.types.batch import USAGE_ENTRIES, BatchRunRecord, BatchSpec, BatchStatus, BatchUsage
from loopline.types.runs import RunPhase, TrainingRunResult
from loopline.types.status import ModelStatus

CTX = RunContext(mlflow_tracking_uri="http://127.0.0.1:5000", feature_repo="/srv/repo")
DAILY = BatchSpec(schedule="0 2 * * *", window="24h")


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def _obs(
    now: datetime, status: BatchStatus | None, run: TrainingRunResult | None = None
) -> BatchObservation:
    return BatchObservation(
        namespace="plant", name="drill-ae", uid="uid-1", created=_at(1, 12), spec=DAILY,
        status=status, run=run, has_champion=True, now=now,
    )  # fmt: skip


def _result(run_id: str, phase: RunPhase, rows: float, fallback: float) -> TrainingRunResult:
    return TrainingRunResult(
        run_id=run_id, phase=phase, model_version="3", finished_at=_at(2, 2, 5),
        metrics={"batch_rows": rows, "batch_fallback_rows": fallback},
    )  # fmt: skip


def _started(day: int, status: BatchStatus | None = None) -> tuple[BatchStatus, str]:
    plan = plan_batch(_obs(_at(day, 2, 1), status), CTX)
    assert plan.submit is not None
    assert plan.status is not None
    return plan.status, plan.submit.run_id


def test_a_finished_run_is_counted_once_however_often_it_is_reconciled() -> None:
    started, run_id = _started(2)
    done = _result(run_id, RunPhase.SUCCEEDED, 1440, 12)
    ended = plan_batch(_obs(_at(2, 2, 6), started, done), CTX).status
    assert ended is not None
    assert ended.usage == [
        BatchUsage(version="3", outcome="ok", runs=1, rows=1440, fallback_rows=12)
    ]
    # The next reconciles read the written status (the backend may still report the run).
    again = plan_batch(_obs(_at(2, 2, 7), ended, done), CTX).status
    later = plan_batch(_obs(_at(2, 9), again), CTX).status
    assert again is not None
    assert later is not None
    assert again.usage == later.usage == ended.usage


def test_an_operator_restart_before_the_write_counts_the_run_with_the_write_it_makes() -> None:
    """The status on the server still holds the run as current: a new operator plans from it
    and writes the same count; the one that died wrote nothing, so the run counts once."""
    started, run_id = _started(2)
    done = _result(run_id, RunPhase.SUCCEEDED, 100, 0)
    lost_write = plan_batch(_obs(_at(2, 2, 6), started, done), CTX).status
    after_restart = plan_batch(_obs(_at(2, 2, 8), started, done), CTX).status
    assert after_restart is not None
    assert after_restart == lost_write  # the same plan from the same status
    assert [u.runs for u in after_restart.usage] == [1]


def test_the_status_round_trips_through_the_api_server_shape() -> None:
    """What the operator writes is what it reads back after a restart (aliases, types)."""
    started, run_id = _started(2)
    ended = plan_batch(
        _obs(_at(2, 2, 6), started, _result(run_id, RunPhase.SUCCEEDED, 10, 2)), CTX
    ).status
    assert ended is not None
    body = ModelStatus(batch=ended).model_dump(by_alias=True, mode="json", exclude_none=True)
    assert body["batch"]["usage"] == [
        {"version": "3", "outcome": "ok", "runs": 1, "rows": 10, "fallbackRows": 2}
    ]
    reread = ModelStatus.model_validate(body).batch
    assert reread is not None
    replanned = plan_batch(_obs(_at(2, 3), reread), CTX).status
    assert replanned is not None
    assert replanned.usage == ended.usage


def test_runs_add_up_per_version_and_outcome() -> None:
    first, run1 = _started(2)
    st = plan_batch(
        _obs(_at(2, 2, 6), first, _result(run1, RunPhase.SUCCEEDED, 100, 5)), CTX
    ).status
    second, run2 = _started(3, st)
    st = plan_batch(_obs(_at(3, 2, 6), second, _result(run2, RunPhase.FAILED, 0, 0)), CTX).status
    third, run3 = _started(4, st)
    st = plan_batch(_obs(_at(4, 2, 6), third, _result(run3, RunPhase.SUCCEEDED, 50, 1)), CTX).status
    assert st is not None
    assert {(u.version, u.outcome): (u.runs, u.rows, u.fallback_rows) for u in st.usage} == {
        ("3", "ok"): (2, 150, 6),
        ("3", "server_error"): (1, 0, 0),
    }


def test_a_cancelled_run_is_an_error_and_a_refused_one_is_no_run() -> None:
    started, run_id = _started(2)
    cancelled = plan_batch(
        _obs(_at(2, 2, 6), started, _result(run_id, RunPhase.CANCELLED, 0, 0)), CTX
    ).status
    assert cancelled is not None
    assert [(u.outcome, u.runs) for u in cancelled.usage] == [("server_error", 1)]
    refused, run2 = _started(3, cancelled)
    after = rejected(refused, run2, "Job name taken", _at(3, 2, 1))
    assert after.usage == cancelled.usage  # never ran: nothing scored, nothing to count


def test_the_totals_are_bounded_dropping_the_versions_not_counted_longest() -> None:
    usage: list[BatchUsage] = []
    for version in range(USAGE_ENTRIES + 5):
        record = BatchRunRecord(
            run_id=f"r{version}", scheduled_time=_at(2, 2), window_start=_at(1, 2),
            window_end=_at(2, 2), phase=RunPhase.SUCCEEDED, model_version=str(version), rows=1,
        )  # fmt: skip
        usage = count_run(usage, record, None)
    assert len(usage) == USAGE_ENTRIES
    assert usage[0].version == "5"
    assert usage[-1].version == str(USAGE_ENTRIES + 4)
    again = count_run(usage, record, 3)
    assert (again[-1].runs, again[-1].fallback_rows, len(again)) == (2, 3, USAGE_ENTRIES)
