"""The local runner's bookkeeping: step events folded into a TrainingRunResult."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.components import progress
from loopline.pipelines.run import fold_events, last_failure, write_result
from loopline.types.runs import RunPhase, TrainingRunResult

BASE = TrainingRunResult(run_id="r", phase=RunPhase.RUNNING)


def test_started_step_becomes_the_current_step() -> None:
    events = [
        {"step": "load-features", "event": "started"},
        {"step": "load-features", "event": "finished", "mlflow_run_id": "m1"},
        {"step": "validate-data", "event": "started"},
    ]
    result = fold_events(BASE, events)
    assert result.step == "validate-data"
    assert result.mlflow_run_id == "m1"
    assert result.phase == RunPhase.RUNNING


def test_failure_message_and_outcome_are_carried() -> None:
    failed = fold_events(
        BASE, [{"step": "validate-data", "event": "failed", "message": "completeness 0.9"}]
    )
    assert (failed.step, failed.message) == ("validate-data", "completeness 0.9")
    assert last_failure([{"step": "x", "event": "failed"}]) == {"step": "x", "event": "failed"}
    assert last_failure([{"step": "x", "event": "started"}]) is None
    done = fold_events(
        BASE,
        [
            {"step": "train-model", "event": "finished", "metrics": {"train_seconds": 2}},
            {
                "step": "register-model",
                "event": "finished",
                "model_version": 3,
                "gate_passed": False,
                "rejection_reason": "f1 0.5 < champion v2 0.6",
                "gate_reason": "f1 0.5 < champion v2 0.6",
                "metrics": {"f1": 0.5, "roc_auc": None},
            },
        ],
    )
    assert done.model_version == "3"
    assert not done.gate_passed
    assert done.rejection_reason == "f1 0.5 < champion v2 0.6"
    assert done.metrics == {"train_seconds": 2.0, "f1": 0.5}  # undefined metrics left out


def test_progress_events_round_trip_through_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    progress.report("train-model", progress.STARTED)  # unset: a no-op
    assert not path.exists()
    monkeypatch.setenv("LOOPLINE_PIPELINE_PROGRESS_FILE", str(path))
    progress.report("train-model", progress.STARTED, run_id="r")
    with path.open("a") as fh:
        fh.write('{"step": "half a li')  # a writer caught mid-line
    events = progress.read_events(path)
    assert [(e["step"], e["event"], e["run_id"]) for e in events] == [
        ("train-model", "started", "r")
    ]


def test_result_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "out" / "result.json"
    write_result(path, BASE)
    write_result(path, BASE.model_copy(update={"step": "train-model"}))
    assert TrainingRunResult.model_validate_json(path.read_text()).step == "train-model"
    assert '"runId": "r"' in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
