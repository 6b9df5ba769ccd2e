"""`operators.batch_runtime` with the real local pipeline backend: a slot's run is submitted
once, a lost status write adopts it, and its end lands in status.batch.

The worker is a small real program speaking the worker protocol (it scores nothing: it
writes a Succeeded result with a row count), so what is tested is the bookkeeping between
the builder and the backend; the batch pipeline itself runs in
tests/integration/test_batch_pipeline_run.py.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from loopline.operators.backends.pipelines import LocalPipelineBackend
from loopline.operators.batch_runtime import reconcile_batch
from loopline.operators.builders.batch import batch_run_id
from loopline.operators.builders.runs import RunContext
from loopline.types.model import ModelSpec
from loopline.types.runs import RunPhase
from loopline.types.status import ModelStatus, VersionRef

WORKER = r"""
import json, sys
from datetime import datetime, timezone
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
spec = json.load(open(args["--spec"]))
with open("../started.log", "a") as f:
    f.write(spec["runId"] + "\n")
now = datetime.now(timezone.utc).isoformat()
json.dump({"runId": spec["runId"], "phase": "Succeeded", "step": "score-window",
           "message": "scored 42 rows", "modelVersion": "3", "mlflowRunId": "m1",
           "metrics": {"batch_rows": 42.0}, "startedAt": now, "finishedAt": now},
          open(args["--result"], "w"))
"""
CTX = RunContext(mlflow_tracking_uri="sqlite:///unused.db", feature_repo="/srv/repo")
META = {
    "namespace": "plant",
    "name": "drill-ae",
    "uid": "uid-1",
    "creationTimestamp": "2026-03-01T12:00:00Z",
}
SPEC = ModelSpec.model_validate(
    {
        "task": "anomaly-detection",
        "pipelineRef": {"name": "training"},
        "batch": {"schedule": "0 2 * * *", "window": "24h"},
    }
)
SERVING = ModelStatus(champion=VersionRef(version="3"))


def _backend(tmp_path: Path) -> LocalPipelineBackend:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return LocalPipelineBackend(tmp_path / "runs", [sys.executable, str(script)])


def _started(tmp_path: Path) -> list[str]:
    log = tmp_path / "runs" / "started.log"
    return log.read_text().split() if log.exists() else []


def test_one_run_per_slot_through_a_lost_status_write_to_its_end(tmp_path: Path) -> None:
    backend = _backend(tmp_path)
    now = datetime(2026, 3, 2, 2, 1, tzinfo=UTC)
    batch, events = reconcile_batch(backend, META, SPEC, SERVING, CTX, now)
    run_id = batch_run_id("drill-ae", "uid-1", datetime(2026, 3, 2, 2, tzinfo=UTC))
    assert batch is not None
    assert batch.current_run is not None
    assert batch.current_run.run_id == run_id
    assert [e.reason for e in events] == ["BatchRunStarted"]
    # The status was never written (operator restarted): the same slot, adopted.
    again, _ = reconcile_batch(backend, META, SPEC, SERVING, CTX, now + timedelta(seconds=5))
    assert again is not None
    assert again.current_run is not None
    assert again.current_run.run_id == run_id
    deadline = time.monotonic() + 30
    while (status := backend.status(run_id)) is None or status.phase != RunPhase.SUCCEEDED:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    written = SERVING.model_copy(update={"batch": batch})
    done, events = reconcile_batch(backend, META, SPEC, written, CTX, now + timedelta(minutes=1))
    assert done is not None
    assert done.current_run is None
    assert done.last_succeeded is not None
    assert done.last_succeeded.rows == 42
    assert [e.reason for e in events] == ["BatchRunSucceeded"]
    assert _started(tmp_path) == [run_id]
    later = SERVING.model_copy(update={"batch": done})
    quiet, events = reconcile_batch(backend, META, SPEC, later, CTX, now + timedelta(hours=3))
    assert not events
    assert quiet is not None
    assert quiet.next_schedule_time == datetime(2026, 3, 3, 2, tzinfo=UTC)
    assert _started(tmp_path) == [run_id]


def test_a_model_without_spec_batch_has_no_batch_status(tmp_path: Path) -> None:
    spec = SPEC.model_copy(update={"batch": None})
    now = datetime(2026, 3, 2, 2, 1, tzinfo=UTC)
    assert reconcile_batch(_backend(tmp_path), META, spec, SERVING, CTX, now) == (None, [])
