"""Local pipeline runs forked from the local backend's pipeline fork worker (bench_pipeline).

The worker is started as the operator starts it and waited for until it answers, as in an
operator that has been up for longer than the worker's imports; each run is then submitted
through `LocalPipelineBackend` exactly as the operator submits it.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any


def forked_run(root: Path, fork: Any) -> dict[str, Any]:
    """One run as the local backend starts it with its fork worker (ready: started with the
    operator): forked from the pre-imported worker, wall from the request to the child's exit
    (its `rc`), so it includes the fork, the record and the answer."""
    from datetime import UTC

    from benchmarks.bench_pipeline import prepare, run_spec, step_times
    from loopline.components.progress import read_events
    from loopline.operators.backends.pipelines import LocalPipelineBackend
    from loopline.types.runs import TrainingRunResult

    rows, repo, uri = prepare(root)
    backend = LocalPipelineBackend(root / "runs", fork_worker=fork)
    spec = run_spec(repo, uri)
    run_dir = root / "runs" / spec.run_id
    load = os.getloadavg()[0]
    began = datetime.now(UTC)
    start = time.perf_counter()
    backend.submit(spec)
    while not (run_dir / "rc").exists():
        time.sleep(0.05)
    wall = time.perf_counter() - start
    log = (run_dir / "worker.log").read_text()
    if "forked from pipeline fork worker" not in log:
        raise RuntimeError(f"the run was not forked from the worker: {log[-2000:]}")
    result = TrainingRunResult.model_validate_json((run_dir / "result.json").read_text())
    steps = step_times(read_events(run_dir / "result.json.d" / "events.jsonl"), began)
    inside = sum(s.get("inside_seconds", 0.0) for s in steps.values())
    return {
        "phase": str(result.phase),
        "rows": rows,
        "load": load,
        "wall_seconds": wall,
        "steps": steps,
        "inside_steps_seconds": inside,
        "overhead_seconds": wall - inside,
        "overhead_fraction": (wall - inside) / wall,
    }


def fork_worker(root: Path) -> tuple[Any, dict[str, Any]]:
    """A fork worker started as the operator starts it, and the seconds until it answers."""
    from loopline.operators.backends.fork_client import PipelineForkWorker

    fork = PipelineForkWorker(root, wait_ready=1200.0)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    record = fork.start()
    if record is None:
        raise RuntimeError(f"the fork worker did not start: see {root / 'worker.log'}")
    while not fork.ready():
        time.sleep(0.1)
    return fork, {"ready_seconds": time.perf_counter() - start, "load": load}
