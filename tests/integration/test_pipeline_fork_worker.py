"""Local runs forked from the pipeline fork worker, as the operator's `local` backend starts
them: real everything (Feast over generated data, the quality gate, torch, a SQLite MLflow,
the worker with its full preload), compared with runs started as fresh processes.

The fork worker is shared by the module (its imports take tens of seconds); the test of a
dead worker kills one of its own.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loopline import supervisor
from loopline.data.generator import GeneratorConfig, generate, write_dataset
from loopline.data.schema import SENSORS, factory_schema
from loopline.models.bundle import load_bundle
from loopline.operators.backends.fork_client import PipelineForkWorker
from loopline.operators.backends.pipelines import PID_FILE, TERMINAL, LocalPipelineBackend
from loopline.types.common import Task, Trigger
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from tests.fixtures.training import fresh_tracking_uri

pytestmark = pytest.mark.slow

DATA = GeneratorConfig(machines=3, days=6, interval_seconds=300, seed=2, fault_fraction=0.08)
PARAMS = {"epochs": 4, "seed": 0, "trainingWindowDays": 30}
FORKED = "forked from pipeline fork worker"


@dataclass
class Store:
    repo: Path
    tracking_uri: str
    root: Path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, _empty_mlflow_db: Path) -> Store:
    from loopline.data import features

    root = tmp_path_factory.mktemp("fork")
    frame, manifest = generate(DATA)
    write_dataset(frame, manifest, root / "data")
    features.create_repo(root / "repo", root / "data" / "sensors.parquet", factory_schema())
    features.apply(root / "repo")
    return Store(root / "repo", fresh_tracking_uri(_empty_mlflow_db, root / "mlflow"), root)


def _ready(fork: PipelineForkWorker, timeout: float) -> None:
    record = fork.start()
    assert record is not None
    deadline = time.monotonic() + timeout
    while not fork.ready():
        assert supervisor.alive(record), supervisor.log_tail(record.log)
        assert time.monotonic() < deadline, "the fork worker did not become ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def fork(store: Store) -> Iterator[PipelineForkWorker]:
    worker = PipelineForkWorker(store.root / ".fork-worker", wait_ready=900.0)
    _ready(worker, 900.0)
    yield worker
    worker.close()


def make_spec(store: Store, run_id: str) -> TrainingRunSpec:
    """A run of its own Model (so that none has a champion to beat)."""
    return TrainingRunSpec.model_validate(
        {
            "runId": run_id,
            "namespace": "plant",
            "modelName": f"drill-{run_id}",
            "task": Task.ANOMALY_DETECTION,
            "trigger": Trigger.MANUAL,
            "featureService": "all_sensors",
            "registeredModelName": f"plant.drill-{run_id}",
            "mlflowTrackingUri": store.tracking_uri,
            "featureRepo": str(store.repo),
            "params": PARAMS,
            "validation": {"metric": "roc_auc"},
        }
    )


def finish(backend: LocalPipelineBackend, run_id: str, timeout: float = 1200) -> TrainingRunResult:
    deadline = time.monotonic() + timeout
    while True:
        result = backend.status(run_id)
        assert result is not None
        if result.phase in TERMINAL:
            return result
        assert time.monotonic() < deadline, f"run {run_id} did not finish: {result}"
        time.sleep(0.5)


def exit_code(run_dir: Path, timeout: float = 30) -> str:
    """The run's `rc` (its process writes the result, then exits: `rc` comes a moment later)."""
    deadline = time.monotonic() + timeout
    while not (run_dir / "rc").exists():
        assert time.monotonic() < deadline, f"no exit code recorded in {run_dir}"
        time.sleep(0.1)
    return (run_dir / "rc").read_text().strip()


def _outputs(runs: Path, run_id: str) -> Path:
    (run_dir,) = (runs / run_id / "result.json.d" / "outputs").iterdir()
    return run_dir


@pytest.mark.timeout(3000)
def test_a_forked_run_writes_the_same_artifacts_and_result_as_a_fresh_process(
    store: Store, fork: PipelineForkWorker
) -> None:
    """...and a backend that did not start it (a restarted operator) follows it to the end."""
    runs = store.root / "runs-same"
    forked = LocalPipelineBackend(runs, fork_worker=fork)
    forked.submit(make_spec(store, "forked"))
    record = supervisor.load_record(runs / "forked" / PID_FILE)
    assert record is not None
    assert record.argv == fork.argv  # the child's command line is the worker's
    assert os.getpgid(record.pid) == record.pid  # it leads its own group, as a fresh one
    adopted = LocalPipelineBackend(runs)  # no fork worker: it only reads what is on disk
    assert adopted.submit(make_spec(store, "forked")) == "forked"  # known: not started again
    result_forked = finish(adopted, "forked")
    assert FORKED in (runs / "forked" / "worker.log").read_text()

    fresh = LocalPipelineBackend(runs)
    fresh.submit(make_spec(store, "fresh"))
    fresh_record = supervisor.load_record(runs / "fresh" / PID_FILE)
    assert fresh_record is not None
    assert fresh_record.argv[0] == "/bin/sh"  # today's wrapper and fresh interpreter
    result_fresh = finish(fresh, "fresh")

    for result in (result_forked, result_fresh):
        assert result.phase == RunPhase.SUCCEEDED, result.message
        assert result.model_version == "1"
        assert result.gate_passed
    assert exit_code(runs / "forked") == "0"
    assert exit_code(runs / "fresh") == "0"

    a, b = _outputs(runs, "forked"), _outputs(runs, "fresh")
    files = {str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(b)) for p in b.rglob("*") if p.is_file()}
    frame = "load-features/features/frame.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(a / frame), pd.read_parquet(b / frame))
    x = pd.read_parquet(store.root / "data" / "sensors.parquet")[list(SENSORS)]
    x = x.dropna().to_numpy(np.float32)[:64]
    scores = [load_bundle(d / "train-model" / "model").score(x) for d in (a, b)]
    np.testing.assert_allclose(scores[0]["anomaly_score"], scores[1]["anomaly_score"], rtol=1e-5)

    def scored(metrics: dict[str, float]) -> dict[str, float]:  # without measured durations
        return {k: v for k, v in metrics.items() if not k.endswith("_seconds")}

    assert scored(result_forked.metrics)
    assert scored(result_forked.metrics) == pytest.approx(scored(result_fresh.metrics), rel=1e-6)


@pytest.mark.timeout(1200)
def test_cancelling_a_forked_run_stops_its_process_group(
    store: Store, fork: PipelineForkWorker
) -> None:
    """With a process per step, so that the group holds more than the run's own process."""
    runs = store.root / "runs-cancel"
    backend = LocalPipelineBackend(runs, fork_worker=fork, runner_args=["--subprocess-steps"])
    backend.submit(make_spec(store, "cancelled"))
    record = supervisor.load_record(runs / "cancelled" / PID_FILE)
    assert record is not None
    deadline = time.monotonic() + 600
    while len(supervisor.group_members(record.pid)) < 2:  # a step's process is running
        assert time.monotonic() < deadline, f"no step started: {backend.status('cancelled')}"
        assert supervisor.alive(record), (runs / "cancelled" / "worker.log").read_text()[-3000:]
        time.sleep(0.2)
    backend.cancel("cancelled")
    assert supervisor.group_members(record.pid) == []  # cancel returns once the group is gone
    result = backend.status("cancelled")
    assert result is not None
    assert result.phase == RunPhase.CANCELLED
    final = TrainingRunResult.model_validate_json((runs / "cancelled" / "result.json").read_text())
    assert final.phase == RunPhase.CANCELLED
    assert "SIGTERM" in final.message
    # The worker reaps its child and records how it ended.
    assert exit_code(runs / "cancelled") == str(128 + signal.SIGTERM)
    assert fork.ready()  # the worker itself was not in the group


@pytest.mark.timeout(1800)
def test_a_dead_worker_falls_back_to_a_fresh_process_and_the_run_succeeds(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    dead = PipelineForkWorker(store.root / ".dead-worker", wait_ready=60.0, preload=["json"])
    _ready(dead, 60.0)
    record = dead.start()
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)
    while supervisor.alive(record):
        time.sleep(0.05)
    runs = store.root / "runs-dead"
    backend = LocalPipelineBackend(runs, fork_worker=dead)
    with caplog.at_level(logging.WARNING, logger="loopline.operators.backends.pipelines"):
        backend.submit(make_spec(store, "fallback"))
    assert "starts as a fresh process" in caplog.text
    started = supervisor.load_record(runs / "fallback" / PID_FILE)
    assert started is not None
    assert started.argv[0] == "/bin/sh"
    result = finish(backend, "fallback")
    assert result.phase == RunPhase.SUCCEEDED, result.message
    log = (runs / "fallback" / "worker.log").read_text()
    assert "not forked from the pipeline fork worker" in log
    assert FORKED not in log
    backend.close()
