"""The local pipeline backend supervises real worker processes.

The worker is the test worker of tests/fixtures/operator.py (a small real program speaking the
worker protocol; it does not train): these tests are about supervision (idempotent submit,
adoption by a new backend instance, exit without result, cancel, unwritable run dir).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from loopline import supervisor
from loopline.operators.backends.pipelines import PID_FILE, LocalPipelineBackend
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from tests.fixtures.operator import started_runs, write_worker


def _spec(run_id: str, epochs: int = 1) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate(
        {
            "runId": run_id,
            "namespace": "plant",
            "modelName": "drill-ae",
            "task": "anomaly-detection",
            "trigger": "manual",
            "featureService": "all_sensors",
            "registeredModelName": "plant.drill-ae",
            "mlflowTrackingUri": "sqlite:///x.db",
            "featureRepo": "feature_repo",
            "params": {"epochs": epochs},
        }
    )


def _until(
    backend: LocalPipelineBackend, run_id: str, done: Callable[[TrainingRunResult], bool]
) -> TrainingRunResult:
    deadline = time.monotonic() + 20
    while True:
        result = backend.status(run_id)
        assert result is not None
        if done(result):
            return result
        assert time.monotonic() < deadline, f"run {run_id} stuck at {result}"
        time.sleep(0.05)


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalPipelineBackend:
    monkeypatch.setenv("LOOPLINE_TEST_WORKER_STEP_SECONDS", "0.05")
    return LocalPipelineBackend(tmp_path / "runs", write_worker(tmp_path / "bin"))


def test_submit_twice_starts_once_and_a_new_backend_adopts(backend: LocalPipelineBackend) -> None:
    assert backend.status("r1") is None
    backend.submit(_spec("r1"))
    backend.submit(_spec("r1"))
    adopted = LocalPipelineBackend(backend.runs_dir, backend.command)  # "restarted operator"
    adopted.submit(_spec("r1"))
    result = _until(adopted, "r1", lambda r: r.phase == RunPhase.SUCCEEDED)
    assert result.model_version == "1"
    assert result.promoted
    assert started_runs(backend.runs_dir) == ["r1"]
    assert backend.runs_of("plant", "drill-ae") == ["r1"]
    assert backend.runs_of("plant", "other") == []


def test_worker_exit_without_result_is_a_failure_with_its_log(
    backend: LocalPipelineBackend,
) -> None:
    backend.submit(_spec("r2", epochs=998))
    result = _until(backend, "r2", lambda r: r.phase == RunPhase.FAILED)
    assert "code 3" in result.message
    assert "worker.log" in result.message


def test_reported_failure_is_passed_through(backend: LocalPipelineBackend) -> None:
    backend.submit(_spec("r3", epochs=999))
    result = _until(backend, "r3", lambda r: r.phase == RunPhase.FAILED)
    assert result.message == "loss is NaN"
    assert result.step == "train-model"


def test_cancel_kills_the_process_group(
    backend: LocalPipelineBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOPLINE_TEST_WORKER_STEP_SECONDS", "30")
    backend.submit(_spec("r4"))
    _until(backend, "r4", lambda r: r.phase == RunPhase.RUNNING)
    record = supervisor.load_record(backend.runs_dir / "r4" / PID_FILE)
    assert record is not None
    pid = record.pid
    backend.cancel("r4")
    assert backend.status("r4").phase == RunPhase.CANCELLED  # type: ignore[union-attr]
    assert (
        not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_unwritable_runs_dir_is_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    backend = LocalPipelineBackend(blocker, write_worker(tmp_path / "bin"))
    with pytest.raises(BackendUnavailable, match="cannot write run directory"):
        backend.submit(_spec("r5"))


def test_missing_worker_program_is_permanent(tmp_path: Path) -> None:
    backend = LocalPipelineBackend(tmp_path / "runs", [str(tmp_path / "no-such-program")])
    backend.submit(_spec("r6"))
    result = _until(backend, "r6", lambda r: r.phase == RunPhase.FAILED)
    assert "code 127" in result.message
    with pytest.raises(BackendRejected):
        backend.status("../escape")
