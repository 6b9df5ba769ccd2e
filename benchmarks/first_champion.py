"""A new Model's first champion, through the local backends the demo's operator uses.

What the demo calls "first champion serving after apply" is, after the operator's first
reconcile: the local pipeline backend's worker process (`python -m loopline.pipelines.run`)
trains and registers version 1, then the local serving backend starts a model server for it
until it answers ready. This drives those two backends directly, without an API server (the
reconcile itself is measured in `bench_operator`), so it runs wherever Python does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

TIMEOUT = 1200.0
POLL = 0.2


def _wait(what: str, check: Any) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(POLL)
    raise TimeoutError(f"{what} did not happen in {TIMEOUT} s")


def first_champion(
    root: Path, *, worker: list[str] | None = None, fork: Any = None
) -> dict[str, Any]:
    """`fork`: a ready `PipelineForkWorker` (an operator up for longer than its imports),
    which forks the run instead of a fresh worker process."""
    from benchmarks.bench_pipeline import prepare, run_spec
    from loopline.operators.backends.pipelines import TERMINAL, LocalPipelineBackend
    from loopline.operators.backends.serving import LocalServingBackend
    from loopline.operators.builders.serving import ServingDesired
    from loopline.types.runs import RunPhase

    _, repo, uri = prepare(root)
    spec = run_spec(repo, uri, run_id="bench-first")
    pipelines = LocalPipelineBackend(root / "runs", command=worker, fork_worker=fork)
    serving = LocalServingBackend(root / "serving", tracking_uri=uri)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    pipelines.submit(spec)
    result = _wait(
        "the first run to end",
        lambda: (r := pipelines.status(spec.run_id)) is not None and r.phase in TERMINAL and r,
    )
    trained = time.perf_counter() - start
    if result.phase != RunPhase.SUCCEEDED or not result.model_version:
        raise RuntimeError(f"the first run did not register a version: {result.message}")
    desired = ServingDesired(
        namespace=spec.namespace,
        name=spec.model_name,
        registered_model=spec.registered_model_name,
        champion_version=result.model_version,
    )
    try:
        serving.apply(desired)
        _wait(
            "the champion to answer ready",
            lambda: (o := serving.observe(spec.namespace, spec.model_name)) and o.ready,
        )
        serving_s = time.perf_counter() - start
    finally:
        serving.delete(spec.namespace, spec.model_name)
        serving.close()
    return {
        "load": load,
        "submit_to_registered_seconds": trained,
        "submit_to_serving_seconds": serving_s,
        "serving_start_seconds": serving_s - trained,
        "version": result.model_version,
        "forked": fork is not None,
    }
