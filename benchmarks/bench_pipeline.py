"""The local pipeline run: where its wall time goes, against its floors; the first champion.

- `pipeline`: full kfp.local runs of the training pipeline on small data (3,456 rows), as the
  `local` backend's worker runs them: warm steps (the default, `loopline.pipelines.warm`,
  RUNS times, median) and kfp.local's one process per step (the peer). Inside the steps is
  the sum of the steps' own started -> finished events; overhead is wall minus that.
- `floors`: a bare interpreter (`python -c pass`) and a bare kfp.local run of a trivial
  six-step pipeline (`benchmarks.trivial_pipeline`), both ways: what any run costs at least.
- `step_imports`: per step, a fresh interpreter importing what that step imports (kfp's
  executor and the step's modules), and a fresh interpreter's MLflow store set-up: what
  every step paid again before the steps ran warm.
- `first_champion`: the path a new Model takes to serving without the API server: the local
  pipeline backend's worker trains and registers the first version, then the local serving
  backend starts its model server until it answers ready.

The machine is shared: each figure carries the 1-minute load average at its start.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from loopline import quiet

RUNS = 3  # warm (and forked) pipeline runs; the median is the figure
PEER_RUNS = 1  # one-process-per-step runs (each is minutes on a loaded machine)
PASS_RUNS = 5
STEP_MODULES = {
    "load-features": [
        "loopline.components.steps",
        "loopline.data.features",
        "loopline.tracking.lineage",
        "loopline.tracking.publish",
        "loopline.tracking.registry",
    ],
    "validate-data": [
        "loopline.components.steps",
        "loopline.data.features",
        "loopline.data.quality",
        "loopline.tracking.publish",
    ],
    "train-model": [
        "loopline.components.model_steps",
        "loopline.models.training",
        "loopline.tracking.publish",
    ],
    "evaluate-model": [
        "loopline.components.model_steps",
        "loopline.models.bundle",
        "loopline.models.evaluation",
        "loopline.tracking.publish",
    ],
    "compare-with-champion": [
        "loopline.components.model_steps",
        "loopline.tracking.champion",
        "loopline.tracking.gate",
        "loopline.tracking.publish",
    ],
    "register-model": [
        "loopline.components.model_steps",
        "loopline.data.features",
        "loopline.data.quality",
        "loopline.models.bundle",
        "loopline.tracking.lineage",
        "loopline.tracking.publish",
    ],
}


def _load() -> float:
    return os.getloadavg()[0]


def _fresh(code: str) -> tuple[float, str]:
    """Wall seconds of a fresh interpreter running `code`, and what it printed."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return time.perf_counter() - start, out.strip()


def _python_pass() -> dict[str, Any]:
    load = _load()
    samples = [_fresh("pass")[0] for _ in range(PASS_RUNS)]
    return {"median_seconds": statistics.median(samples), "samples": samples, "load": load}


def _step_imports(tracking_uri: str) -> dict[str, Any]:
    timed = "import time; t = time.perf_counter(); {body}; print(time.perf_counter() - t)"
    steps: dict[str, Any] = {}
    for name, modules in STEP_MODULES.items():
        load = _load()
        body = "; ".join(f"import {m}" for m in ["kfp.dsl.executor_main", *modules])
        wall, inside = _fresh(timed.format(body=body))
        steps[name] = {"wall_seconds": wall, "import_seconds": float(inside), "load": load}
    store = (
        "from loopline.tracking.experiments import client_for, ensure_experiment; "
        "t = time.perf_counter(); "
        f"ensure_experiment(client_for({tracking_uri!r}), 'bench', 'drill-ae')"
    )
    load = _load()
    wall, inside = _fresh(f"import time; {store}; print(time.perf_counter() - t)")
    return {
        "steps": steps,
        "sum_wall_seconds": sum(s["wall_seconds"] for s in steps.values()),
        "mlflow_store_setup_seconds": float(inside),
        "mlflow_store_setup_load": load,
    }


def _trivial(root: Path, *, warm: bool) -> dict[str, Any]:
    from kfp import local

    from benchmarks.trivial_pipeline import trivial_pipeline
    from loopline.pipelines.warm import subprocess_steps, warm_steps

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    load = _load()
    start = time.perf_counter()
    with warm_steps() if warm else subprocess_steps():
        task = trivial_pipeline(value="x")
    wall = time.perf_counter() - start
    assert task.output == "x"
    return {"wall_seconds": wall, "load": load}


def prepare(root: Path) -> tuple[int, str, str]:
    """Generated data as a Feast repository and an empty SQLite MLflow: (rows, repo, uri).

    The MLflow store is created here, untimed, as the demo's MLflow server creates it before
    any run: a run's first step would otherwise count MLflow's schema migrations as its work."""
    from loopline.data import features
    from loopline.data.generator import GeneratorConfig, generate, write_dataset
    from loopline.data.schema import factory_schema

    frame, manifest = generate(
        GeneratorConfig(machines=3, days=4, interval_seconds=300, seed=2, fault_fraction=0.05)
    )
    write_dataset(frame, manifest, root / "data")
    features.create_repo(root / "repo", root / "data" / "sensors.parquet", factory_schema())
    features.apply(root / "repo")
    from loopline.tracking.experiments import client_for

    (root / "mlflow").mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    client_for(uri).search_experiments()
    return len(frame), str(root / "repo"), uri


def run_spec(repo: str, tracking_uri: str, run_id: str = "bench-1") -> Any:
    from loopline.types.common import Task, Trigger
    from loopline.types.runs import TrainingRunSpec

    return TrainingRunSpec(
        run_id=run_id,
        namespace="bench",
        model_name="drill-ae",
        task=Task.ANOMALY_DETECTION,
        trigger=Trigger.MANUAL,
        feature_service="all_sensors",
        registered_model_name="bench.drill-ae",
        mlflow_tracking_uri=tracking_uri,
        feature_repo=repo,
        params={"epochs": 5, "trainingWindowDays": 30},
    )


def step_times(events: list[dict[str, Any]], start: datetime) -> dict[str, dict[str, float]]:
    """Per step: seconds inside (started -> finished) and before it (the previous step's end,
    or the run's start, -> started): what kfp.local, the interpreter and imports took."""
    from loopline.components.progress import FAILED, FINISHED, STARTED

    out: dict[str, dict[str, float]] = {}
    began: dict[str, datetime] = {}
    last = start
    for event in events:
        at = datetime.fromisoformat(event["time"])
        if event["event"] == STARTED:
            began[event["step"]] = at
            out[event["step"]] = {"before_seconds": (at - last).total_seconds()}
        elif event["event"] in (FINISHED, FAILED) and event["step"] in began:
            out[event["step"]]["inside_seconds"] = (at - began[event["step"]]).total_seconds()
            last = at
    return out


def _pipeline(root: Path, *, warm: bool) -> dict[str, Any]:
    """One run as the local backend starts it: a fresh `python -m loopline.pipelines.run`, so
    its wall includes the worker's interpreter and every import the run needs."""
    from datetime import UTC

    from loopline.components.progress import read_events
    from loopline.types.runs import TrainingRunResult

    rows, repo, uri = prepare(root)
    (root / "spec.json").write_text(run_spec(repo, uri).model_dump_json(by_alias=True))
    argv = [sys.executable, "-m", "loopline.pipelines.run", "--no-process-group"]
    argv += ["--spec", str(root / "spec.json"), "--result", str(root / "result.json")]
    argv += ["--workdir", str(root / "work")] + ([] if warm else ["--subprocess-steps"])
    load = _load()
    began = datetime.now(UTC)
    start = time.perf_counter()
    with (root / "worker.log").open("wb") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    wall = time.perf_counter() - start
    result = TrainingRunResult.model_validate_json((root / "result.json").read_text())
    steps = step_times(read_events(root / "work" / "events.jsonl"), began)
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
        "tracking_uri": uri,
    }


def _preimported(root: Path) -> dict[str, Any]:
    """One warm run in this process after everything the steps import is imported: the run a
    worker forked from a pre-imported process would make (what is left without imports)."""
    import importlib
    from datetime import UTC

    from loopline.components.progress import read_events
    from loopline.pipelines.run import Runner

    for module in {m for modules in STEP_MODULES.values() for m in modules}:
        importlib.import_module(module)
    importlib.import_module("kfp.dsl.executor_main")
    rows, repo, uri = prepare(root)
    runner = Runner(run_spec(repo, uri), root / "result.json", root / "work", warm=True)
    load = _load()
    began = datetime.now(UTC)
    start = time.perf_counter()
    result = runner.run()
    wall = time.perf_counter() - start
    steps = step_times(read_events(root / "work" / "events.jsonl"), began)
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


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(runs),
        "median_wall_seconds": _median_of(runs, "wall_seconds"),
        "median_inside_steps_seconds": _median_of(runs, "inside_steps_seconds"),
        "median_overhead_seconds": _median_of(runs, "overhead_seconds"),
        "median_overhead_fraction": _median_of(runs, "overhead_fraction"),
        "each": runs,
    }


MODES = ("floors", "warm", "subprocess", "imports", "champion", "preimported", "forked")


def _measure(base: Path, modes: set[str]) -> dict[str, Any]:
    from benchmarks.first_champion import first_champion

    out: dict[str, Any] = {}
    if "floors" in modes:
        out["floors"] = {
            "python_pass": _python_pass(),
            "trivial_subprocess_steps": _trivial(base / "trivial-sub", warm=False),
            "trivial_warm_steps": _trivial(base / "trivial-warm", warm=True),
        }
    if "forked" in modes:
        from benchmarks.forked_runs import fork_worker, forked_run

        fork, ready = fork_worker(base / "fork-worker")
        try:
            # Warm and forked runs alternate, so that both see the same drift of a shared
            # machine's load.
            warm, forked = [], []
            for i in range(RUNS):
                if "warm" in modes:
                    warm.append(_pipeline(base / f"warm-{i}", warm=True))
                forked.append(forked_run(base / f"fork-{i}", fork))
            out["pipeline_forked_worker"] = {"worker": ready, **_summary(forked)}
            if warm:
                out["pipeline_warm_steps"] = _summary(warm)
            out["first_champion_forked"] = first_champion(base / "champion-fork", fork=fork)
        finally:
            fork.close()
    elif "warm" in modes:
        out["pipeline_warm_steps"] = _summary(
            [_pipeline(base / f"warm-{i}", warm=True) for i in range(RUNS)]
        )
    if "subprocess" in modes:
        out["pipeline_subprocess_steps"] = _summary(
            [_pipeline(base / f"sub-{i}", warm=False) for i in range(PEER_RUNS)]
        )
    if "imports" in modes:
        _, _, uri = prepare(base / "imports")
        out["step_imports"] = _step_imports(uri)
    if "champion" in modes:
        out["first_champion"] = first_champion(base / "champion")
    if "preimported" in modes:
        out["pipeline_preimported_process"] = _summary(
            [_preimported(base / f"pre-{i}") for i in range(RUNS)]
        )
    return out


def _ratios(doc: dict[str, Any]) -> dict[str, float]:
    """Ratios between sections; each only when both sides were measured in the same run."""
    same = doc.get("measured_together", [])
    floors = doc.get("floors", {})
    warm, peer = doc.get("pipeline_warm_steps"), doc.get("pipeline_subprocess_steps")
    forked = doc.get("pipeline_forked_worker")
    ratios: dict[str, float] = {}
    if warm and peer and {"warm", "subprocess"} <= set(same):
        ratios["subprocess_over_warm_wall"] = (
            peer["median_wall_seconds"] / warm["median_wall_seconds"]
        )
    if warm and forked and {"warm", "forked"} <= set(same):
        ratios["forked_over_warm_wall"] = (
            forked["median_wall_seconds"] / warm["median_wall_seconds"]
        )
        ratios["forked_overhead_over_warm_overhead"] = (
            forked["median_overhead_seconds"] / warm["median_overhead_seconds"]
        )
    if floors and {"floors", "warm"} <= set(same) and warm:
        ratios["warm_overhead_over_trivial_warm_run"] = (
            warm["median_overhead_seconds"] / floors["trivial_warm_steps"]["wall_seconds"]
        )
    if floors and {"floors", "forked"} <= set(same) and forked:
        ratios["forked_overhead_over_trivial_warm_run"] = (
            forked["median_overhead_seconds"] / floors["trivial_warm_steps"]["wall_seconds"]
        )
    if floors and {"floors", "subprocess"} <= set(same) and peer:
        ratios["subprocess_overhead_over_trivial_subprocess_run"] = (
            peer["median_overhead_seconds"] / floors["trivial_subprocess_steps"]["wall_seconds"]
        )
    if floors:
        ratios["trivial_subprocess_over_six_python_pass"] = floors["trivial_subprocess_steps"][
            "wall_seconds"
        ] / (6 * floors["python_pass"]["median_seconds"])
    return ratios


def main(argv: list[str] | None = None) -> Path:
    """`--modes a,b`: measure only those sections; the others are kept from the last results
    file, each with the time it was measured (`sections_measured_at`)."""
    import argparse

    from benchmarks.common import RESULTS_DIR

    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pipeline")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {MODES}")
    modes = {m for m in parser.parse_args(argv).modes.split(",") if m}
    if not modes <= set(MODES):
        parser.error(f"--modes: {sorted(modes - set(MODES))} are not among {MODES}")
    quiet.apply()
    previous: dict[str, Any] = {}
    path = RESULTS_DIR / "pipeline.json"
    if modes != set(MODES) and path.is_file():
        previous = json.loads(path.read_text())
        stamps = previous.get("sections_measured_at", {})
        for key, value in list(previous.items()):
            if isinstance(value, dict) and key not in stamps and key not in ("machine", "ratios"):
                stamps[key] = previous.get("measured_at")
        previous["sections_measured_at"] = stamps
        for key in ("benchmark", "measured_at", "machine", "ratios", "measured_together"):
            previous.pop(key, None)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        measured = _measure(Path(tmp), modes)
    now = datetime.now().astimezone().isoformat()
    stamps = previous.pop("sections_measured_at", {})
    stamps.update({key: now for key in measured})
    payload = {**previous, **measured, "sections_measured_at": stamps}
    payload["measured_together"] = sorted(modes)
    payload["ratios"] = _ratios(payload)
    path = write_results("pipeline", payload)
    print(json.dumps(payload, indent=2, default=str))
    return path


if __name__ == "__main__":
    main()
