"""The batch schedule's pure parts: slots, run ids, the run spec a slot asks for, status."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from loopline.operators.builders.batch import (
    BatchObservation,
    batch_run_id,
    manual_run_id,
    plan_batch,
    rejected,
)
from loopline.operators.builders.cron import CronError, CronSchedule
from loopline.operators.builders.runs import RunContext
from loopline.types.batch import (
    BatchRunSpec,
    BatchSpec,
    BatchStatus,
    parse_run_spec,
    window_length,
)
from loopline.types.model import ModelSpec
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec

CTX = RunContext(mlflow_tracking_uri="http://127.0.0.1:5000", feature_repo="/srv/repo")
CREATED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAILY = BatchSpec(schedule="0 2 * * *", window="24h")
UID = "0f6c7d2e-uid"


def _obs(
    now: datetime,
    status: BatchStatus | None = None,
    spec: BatchSpec | None = DAILY,
    run: TrainingRunResult | None = None,
    champion: bool = True,
) -> BatchObservation:
    return BatchObservation(
        namespace="plant",
        name="drill-ae",
        uid=UID,
        created=CREATED,
        spec=spec,
        status=status,
        run=run,
        has_champion=champion,
        now=now,
    )


def _at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def test_latest_slot_scans_back_and_excludes_since() -> None:
    cron = CronSchedule.parse("0 2 * * *")
    assert cron.latest_at_or_before(_at(5, 1, 59), _at(1, 0)) == _at(4, 2)
    assert cron.latest_at_or_before(_at(5, 2, 0), _at(1, 0)) == _at(5, 2)
    assert cron.latest_at_or_before(_at(5, 2, 0), _at(5, 2, 0)) is None  # (since, t]
    weekly = CronSchedule.parse("30 6 * * 1")  # Mondays
    assert weekly.latest_at_or_before(_at(12, 0), _at(1, 0)) == _at(9, 6, 30)


def test_run_id_is_a_dns_label_per_model_and_slot() -> None:
    rid = batch_run_id("drill-ae", UID, _at(2, 2))
    assert rid == batch_run_id("drill-ae", UID, _at(2, 2))
    assert rid.startswith("drill-ae-batch-202603020200-")
    assert rid != batch_run_id("drill-ae", "another-uid", _at(2, 2))
    assert rid != batch_run_id("drill-ae", UID, _at(3, 2))
    long = batch_run_id("x" * 63, UID, _at(2, 2))
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", long)
    assert manual_run_id("plant", "drill-ae", "a", "b") == manual_run_id(
        "plant", "drill-ae", "a", "b"
    )
    assert manual_run_id("plant", "drill-ae", "a") != manual_run_id("plant", "drill-ae", "b")


def test_no_slot_yet_starts_nothing_and_says_when_the_next_is() -> None:
    plan = plan_batch(_obs(_at(1, 13)), CTX)
    assert plan.submit is None
    assert not plan.events
    assert plan.status is not None
    assert plan.status.next_schedule_time == _at(2, 2)


def test_a_passed_slot_starts_one_run_of_the_window_ending_at_it() -> None:
    plan = plan_batch(_obs(_at(2, 2, 3)), CTX)
    run = plan.submit
    assert isinstance(run, BatchRunSpec)
    assert run.run_id == batch_run_id("drill-ae", UID, _at(2, 2))
    assert (run.window_start, run.window_end) == (_at(1, 2), _at(2, 2))
    assert run.scheduled_time == _at(2, 2)
    assert run.version is None  # the champion, resolved when the run starts
    assert run.registered_model_name == "plant.drill-ae"
    assert (run.feature_repo, run.mlflow_tracking_uri) == (
        CTX.feature_repo,
        CTX.mlflow_tracking_uri,
    )
    st = plan.status
    assert st is not None
    assert st.last_schedule_time == _at(2, 2)
    assert st.current_run is not None
    assert st.current_run.run_id == run.run_id
    assert st.current_run.phase == RunPhase.PENDING
    assert [e.reason for e in plan.events] == ["BatchRunStarted"]
    # The next reconcile, run in flight: nothing new.
    running = TrainingRunResult(run_id=run.run_id, phase=RunPhase.RUNNING)
    again = plan_batch(_obs(_at(2, 2, 4), st, run=running), CTX)
    assert again.submit is None
    assert not again.events
    assert again.status is not None
    assert again.status.current_run is not None
    assert again.status.current_run.phase == RunPhase.RUNNING


def test_a_lost_status_write_asks_for_the_same_run_id_again() -> None:
    first = plan_batch(_obs(_at(2, 2, 3)), CTX)
    # The operator restarted before writing the status: it sees the old (empty) status.
    second = plan_batch(_obs(_at(2, 2, 9)), CTX)
    assert first.submit is not None
    assert second.submit is not None
    assert first.submit.run_id == second.submit.run_id


def test_missed_slots_run_only_the_latest() -> None:
    status = BatchStatus(last_schedule_time=_at(2, 2))
    plan = plan_batch(_obs(_at(6, 9), status), CTX)  # slots of the 3rd..6th missed
    assert plan.submit is not None
    assert plan.submit.scheduled_time == _at(6, 2)
    assert len(plan.events) == 1


def test_a_finished_run_is_recorded_and_its_slot_never_runs_again() -> None:
    started = plan_batch(_obs(_at(2, 2, 3)), CTX)
    assert started.submit is not None
    done = TrainingRunResult(
        run_id=started.submit.run_id,
        phase=RunPhase.SUCCEEDED,
        message="scored 1440 rows with version 3 -> /srv/repo/data/scores/x.parquet",
        model_version="3",
        mlflow_run_id="abc",
        metrics={"batch_rows": 1440.0},
        finished_at=_at(2, 2, 5),
    )
    plan = plan_batch(_obs(_at(2, 2, 6), started.status, run=done), CTX)
    st = plan.status
    assert plan.submit is None
    assert st is not None
    assert st.current_run is None
    assert st.last_succeeded is not None
    assert st.last_succeeded.rows == 1440
    assert st.last_succeeded.model_version == "3"
    assert st.last_run == st.last_succeeded
    assert [e.reason for e in plan.events] == ["BatchRunSucceeded"]
    assert plan_batch(_obs(_at(2, 23), st), CTX).submit is None
    assert plan_batch(_obs(_at(3, 2), st), CTX).submit is not None


def test_a_failed_run_is_the_last_run_but_not_the_last_success() -> None:
    started = plan_batch(_obs(_at(2, 2, 3)), CTX)
    assert started.submit is not None
    failed = TrainingRunResult(
        run_id=started.submit.run_id, phase=RunPhase.FAILED, message="score-window: no rows"
    )
    plan = plan_batch(_obs(_at(2, 2, 6), started.status, run=failed), CTX)
    assert plan.status is not None
    assert plan.status.last_succeeded is None
    assert plan.status.last_run is not None
    assert plan.status.last_run.phase == RunPhase.FAILED
    assert [e.reason for e in plan.events] == ["BatchRunFailed"]
    assert "no rows" in plan.events[0].message


def test_a_slot_waits_for_the_run_in_flight_and_for_a_champion() -> None:
    started = plan_batch(_obs(_at(2, 2, 3)), CTX)
    running = TrainingRunResult(run_id="x", phase=RunPhase.RUNNING)
    late = plan_batch(_obs(_at(3, 2, 1), started.status, run=running), CTX)
    assert late.submit is None
    assert late.status is not None
    assert "waits for batch run" in late.status.message
    no_champion = plan_batch(_obs(_at(2, 2, 3), champion=False), CTX)
    assert no_champion.submit is None
    assert no_champion.status is not None
    assert "champion" in no_champion.status.message
    assert no_champion.status.last_schedule_time is None  # the slot is not spent
    pinned = BatchSpec(schedule="0 2 * * *", version="2")
    plan = plan_batch(_obs(_at(2, 2, 3), spec=pinned, champion=False), CTX)
    assert plan.submit is not None
    assert plan.submit.version == "2"


def test_a_run_the_backend_does_not_know_is_submitted_again_under_its_id() -> None:
    started = plan_batch(_obs(_at(2, 2, 3)), CTX)
    assert started.submit is not None
    plan = plan_batch(_obs(_at(2, 2, 9), started.status, run=None), CTX)
    assert plan.submit is not None
    assert plan.submit.run_id == started.submit.run_id
    assert not plan.events


def test_without_spec_batch_nothing_starts_and_the_record_stays() -> None:
    assert plan_batch(_obs(_at(2, 3), spec=None), CTX).status is None
    status = BatchStatus(last_schedule_time=_at(2, 2), next_schedule_time=_at(3, 2))
    plan = plan_batch(_obs(_at(5, 3), status, spec=None), CTX)
    assert plan.submit is None
    assert plan.status is not None
    assert plan.status.last_schedule_time == _at(2, 2)
    assert plan.status.next_schedule_time is None


def test_a_refused_run_spends_its_slot_as_a_failed_run() -> None:
    started = plan_batch(_obs(_at(2, 2, 3)), CTX)
    assert started.status is not None
    assert started.submit is not None
    st = rejected(started.status, started.submit.run_id, "Job name taken", _at(2, 2, 3))
    assert st.current_run is None
    assert st.last_schedule_time == _at(2, 2)
    assert st.last_run is not None
    assert "Job name taken" in st.last_run.message


def test_spec_batch_fields_are_validated_naming_the_field() -> None:
    assert window_length("30m") == timedelta(minutes=30)
    assert window_length("7d") == timedelta(days=7)
    with pytest.raises(ValueError, match="window must be"):
        window_length("1w")
    base = {"task": "anomaly-detection", "pipelineRef": {"name": "p"}}
    for bad, field in (
        ({"schedule": "0 25 * * *"}, "schedule"),
        ({"schedule": "5-1 * * * *"}, "schedule"),
        ({"schedule": "0 2 * * *", "window": "2 days"}, "window"),
        ({"schedule": "0 2 * * *", "version": "champion"}, "version"),
    ):
        with pytest.raises(ValidationError) as info:
            ModelSpec.model_validate({**base, "batch": bad})
        assert info.value.errors()[0]["loc"] == ("batch", field)
    spec = ModelSpec.model_validate({**base, "batch": {"schedule": "0 2 * * *"}})
    assert spec.batch == DAILY


def test_the_crd_refuses_a_malformed_batch_schedule() -> None:
    from loopline.types import crd_schema

    schema = crd_schema.model_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schedule = schema["properties"]["spec"]["properties"]["batch"]["properties"]["schedule"]
    rule = schedule["x-kubernetes-validations"][0]["rule"]
    pattern = re.search(r"self\.matches\('(.*)'\)", rule)
    assert pattern is not None
    assert re.fullmatch(pattern.group(1), "0 2 * * *")
    assert not re.fullmatch(pattern.group(1), "0 2 * *")


def test_a_run_spec_file_is_read_as_the_kind_it_is() -> None:
    batch = plan_batch(_obs(_at(2, 2, 3)), CTX).submit
    assert batch is not None
    assert parse_run_spec(batch.model_dump_json(by_alias=True)) == batch
    training = TrainingRunSpec(
        run_id="r",
        namespace="plant",
        model_name="drill-ae",
        task="anomaly-detection",
        trigger="manual",
        feature_service="all_sensors",
        registered_model_name="plant.drill-ae",
        mlflow_tracking_uri="x",
        feature_repo="y",
    )
    assert parse_run_spec(training.model_dump_json(by_alias=True)) == training


def _brute_next(cron: CronSchedule, t: datetime) -> datetime:
    candidate = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not cron.matches(candidate):
        candidate += timedelta(minutes=1)
    return candidate


def _brute_latest(cron: CronSchedule, t: datetime, since: datetime) -> datetime | None:
    candidate = t.replace(second=0, microsecond=0)
    while candidate > since:
        if cron.matches(candidate):
            return candidate
        candidate -= timedelta(minutes=1)
    return None


@pytest.mark.parametrize(
    "text",
    [
        "* * * * *",
        "*/7 * * * *",
        "0 2 * * *",
        "30 6 * * 1",
        "15 */5 1,15 * *",
        "0 0 29 2 *",  # leap days only
        "5 4 * 3-4 0",
        "0 12 13 * 5",  # the 13th OR a Friday
        "59 23 31 12 *",
    ],
)
def test_skipping_scans_agree_with_minute_by_minute_ones(text: str) -> None:
    """The skips (a month, day or hour at a time) find what a scan of every minute finds."""
    cron = CronSchedule.parse(text)
    for t in (
        datetime(2026, 2, 27, 23, 58, 30, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2027, 3, 1, 0, 0, tzinfo=UTC),
        datetime(2028, 3, 1, 0, 1, tzinfo=UTC),
    ):
        since = t - timedelta(days=40)
        assert cron.latest_at_or_before(t, since) == _brute_latest(cron, t, since), t
        if text not in ("0 0 29 2 *", "59 23 31 12 *"):  # brute force: up to a year of minutes
            assert cron.next_after(t) == _brute_next(cron, t), t


def test_rare_schedules_are_found_across_the_year() -> None:
    leap = CronSchedule.parse("0 0 29 2 *")
    assert leap.next_after(datetime(2027, 6, 1, tzinfo=UTC)) == datetime(2028, 2, 29, tzinfo=UTC)
    assert leap.latest_at_or_before(
        datetime(2031, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    ) == datetime(2028, 2, 29, tzinfo=UTC)
    never = CronSchedule.parse("0 0 31 2 *")
    with pytest.raises(CronError, match="never matches"):
        never.next_after(datetime(2026, 1, 1, tzinfo=UTC))
