"""Run one pipeline locally with `kfp.local`; the `local` backend supervises this.

    python -m loopline.pipelines.run --spec run.json --result result.json [--workdir DIR]

Reads a `TrainingRunSpec` (or a `BatchRunSpec`: the batch-scoring pipeline), runs the pipeline
with `kfp.local.SubprocessRunner(use_venv=False)` (no venv, no pip install) with each step's
executor run warm, in this process, so the imports and stores are paid once per run
(`loopline.pipelines.warm`; `--subprocess-steps` keeps kfp.local's one process per step), and
keeps
`result.json` (a `TrainingRunResult`) current: `Running` with the step in progress while it
runs, then `Succeeded` (model version, the gate's verdict or the rejection reason, metrics) or `Failed`
(the failing step and its error, e.g. the quality gate's summary). Writes are atomic (rename),
so a reader never sees half a file.

On a cluster (the `kubernetes` pipeline backend runs this as a Job's one container),
`--termination-message /dev/termination-log` also writes the final result, compacted to the
kubelet's 4 KB limit (`termination_message`), to the container's termination message: the
operator reads it from the pod's status, with no shared disk and no API access from the pod.

Cancelling: SIGTERM or SIGINT to this process writes `Cancelled` and stops the running step.
The runner makes itself a process-group leader so that it can take its component processes
down with it, and exits 143 (SIGTERM) / 130 (SIGINT). Exit code 0 means the run succeeded
(whether or not the version passed the gate), 1 that it failed, 2 that the spec was unreadable.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from loopline import quiet
from loopline.components.progress import FAILED, FINISHED, STARTED, read_events
from loopline.types.batch import BatchRunSpec, RunSpec, parse_run_spec
from loopline.types.runs import RunPhase, TrainingRunResult

log = logging.getLogger("loopline.pipelines.run")

POLL_SECONDS = 0.5
# What the kubelet keeps of a container's termination message, in bytes.
TERMINATION_MESSAGE_LIMIT = 4096
# A message or rejection reason cut to fit keeps at least this many characters, and says so.
_KEPT = 300
_CUT = " [cut to fit the termination message; the pod's log has all of it]"


def write_result(path: Path, result: TrainingRunResult) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(result.model_dump_json(by_alias=True, indent=2) + "\n")
    os.replace(tmp, path)


def _compact(result: TrainingRunResult) -> bytes:
    return result.model_dump_json(by_alias=True, exclude_defaults=True).encode()


def _cut(text: str | None, keep: int) -> str | None:
    return text if text is None or len(text) <= keep else text[:keep] + _CUT


def termination_message(result: TrainingRunResult, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
    """The result as compact JSON of at most `limit` bytes (the kubelet drops the rest, which
    would leave JSON nobody can parse). Fields at their defaults are left out; if that is not
    enough, the free-text message and rejection reason are cut, then the metrics left out
    (they are in the MLflow run too): identity, phase, step and version always fit."""
    if len(_compact(result)) <= limit:
        return _compact(result).decode()
    keep = max(len(result.message), len(result.rejection_reason or ""))
    while keep > _KEPT:
        keep = max(_KEPT, keep // 2)
        cut = result.model_copy(
            update={
                "message": _cut(result.message, keep),
                "rejection_reason": _cut(result.rejection_reason, keep),
            }
        )
        if len(_compact(cut)) <= limit:
            return _compact(cut).decode()
    result = result.model_copy(
        update={
            "message": _cut(result.message, _KEPT),
            "rejection_reason": _cut(result.rejection_reason, _KEPT),
        }
    )
    if result.metrics:
        where = f"MLflow run {result.mlflow_run_id}" if result.mlflow_run_id else "the pod's log"
        note = f" ({len(result.metrics)} metrics left out to fit: see {where})"
        result = result.model_copy(update={"metrics": {}, "message": result.message + note})
    text = _compact(result)
    if len(text) > limit:
        raise ValueError(f"result of run {result.run_id} needs {len(text)} bytes > {limit}")
    return text.decode()


def write_termination_message(path: Path, result: TrainingRunResult) -> None:
    """Overwrite the termination message file in place: the kubelet bind-mounts it, so it
    cannot be replaced by a rename like the result file."""
    try:
        path.write_text(termination_message(result))
    except (OSError, ValueError) as exc:
        log.error("cannot write the termination message %s: %s", path, exc)


def fold_events(base: TrainingRunResult, events: list[dict[str, Any]]) -> TrainingRunResult:
    """The result as the step events so far describe it (pure: the runner's bookkeeping)."""
    update: dict[str, Any] = {}
    for event in events:
        if event.get("mlflow_run_id"):
            update["mlflow_run_id"] = event["mlflow_run_id"]
        if event["event"] == STARTED:
            update["step"] = event["step"]
            update["message"] = f"running {event['step']}"
        elif event["event"] == FAILED:
            update |= {"step": event["step"], "message": event.get("message", "")}
        elif event["event"] == FINISHED:
            update["step"] = event["step"]
            update["message"] = f"finished {event['step']}"
            if event.get("model_version"):
                update |= {
                    "model_version": str(event["model_version"]),
                    "gate_passed": bool(event.get("gate_passed", event.get("promoted"))),
                    "rejection_reason": event.get("rejection_reason"),
                    "message": event.get("gate_reason") or update["message"],
                }
            if isinstance(event.get("metrics"), dict):
                numbers = {
                    k: float(v) for k, v in event["metrics"].items() if isinstance(v, int | float)
                }
                update["metrics"] = {**base.metrics, **update.get("metrics", {}), **numbers}
    return base.model_copy(update=update)


def last_failure(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    failures = [e for e in events if e["event"] == FAILED]
    return failures[-1] if failures else None


class Runner:
    """One pipeline run: the kfp.local session, the progress watcher and the result file."""

    def __init__(
        self,
        spec: RunSpec,
        result_path: Path,
        workdir: Path,
        termination_path: Path | None = None,
        *,
        warm: bool = True,
    ) -> None:
        self.spec = spec
        self.warm = warm
        self.result_path = result_path
        self.termination_path = termination_path
        self.workdir = workdir
        self.events_path = workdir / "events.jsonl"
        self.base = TrainingRunResult(
            run_id=spec.run_id, phase=RunPhase.RUNNING, started_at=datetime.now(UTC)
        )
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._final = False

    def _publish(self, result: TrainingRunResult, *, final: bool = False) -> None:
        with self._lock:
            if self._final:
                return
            self._final = final
            write_result(self.result_path, result)
            if final and self.termination_path is not None:
                write_termination_message(self.termination_path, result)

    def _current(self) -> TrainingRunResult:
        return fold_events(self.base, read_events(self.events_path))

    def _watch(self) -> None:
        seen = -1
        while not self._done.wait(POLL_SECONDS):
            events = read_events(self.events_path)
            if len(events) != seen:
                seen = len(events)
                self._publish(fold_events(self.base, events))

    def cancel(self, signum: int) -> None:
        now = datetime.now(UTC)
        current = self._current()
        self._publish(
            current.model_copy(
                update={
                    "phase": RunPhase.CANCELLED,
                    "message": f"cancelled by signal {signal.Signals(signum).name} during "
                    f"{current.step or 'startup'}",
                    "finished_at": now,
                }
            ),
            final=True,
        )

    def run(self) -> TrainingRunResult:
        import warnings

        from kfp import local

        # kfp.local warns that a non-python base image may not match this interpreter's
        # packages; here it does by construction (the image is Loopline's own environment).
        warnings.filterwarnings(
            "ignore", message="You may be attemping to run a task", category=RuntimeWarning
        )

        from loopline.pipelines.batch import all_pipelines
        from loopline.pipelines.warm import subprocess_steps, warm_steps

        pipelines = all_pipelines()

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.events_path.unlink(missing_ok=True)
        os.environ["LOOPLINE_PIPELINE_PROGRESS_FILE"] = str(self.events_path)
        self._publish(self.base.model_copy(update={"message": "starting"}))
        watcher = threading.Thread(target=self._watch, name="progress", daemon=True)
        watcher.start()
        pipeline: Any = pipelines.get(self.spec.pipeline)
        try:
            if pipeline is None:
                raise ValueError(
                    f"pipeline {self.spec.pipeline!r} is not one of {sorted(pipelines)}"
                )
            local.init(
                runner=local.SubprocessRunner(use_venv=False),
                pipeline_root=str(self.workdir / "outputs"),
                raise_on_error=True,
            )
            with warm_steps() if self.warm else subprocess_steps():
                task = pipeline(spec_json=self.spec.model_dump_json(by_alias=True))
            outcome = json.loads(task.output)
            error: str | None = None
        except Exception as exc:  # kfp.local raises RuntimeError("Task ... FAILURE")
            outcome, error = None, str(exc)
        finally:
            self._done.set()
            watcher.join()
        events = read_events(self.events_path)
        result = fold_events(self.base, events)
        now = datetime.now(UTC)
        if error is None and outcome is not None:
            result = fold_events(result, [{"event": FINISHED, "step": result.step, **outcome}])
            result = result.model_copy(update={"phase": RunPhase.SUCCEEDED, "finished_at": now})
            if isinstance(self.spec, BatchRunSpec):  # no gate: say what was scored
                result = result.model_copy(update={"message": str(outcome.get("summary", ""))})
        else:
            failure = last_failure(events)
            message = failure["message"] if failure else (error or "pipeline failed")
            result = result.model_copy(
                update={
                    "phase": RunPhase.FAILED,
                    "message": message,
                    "step": failure["step"] if failure else result.step,
                    "finished_at": now,
                }
            )
        self._publish(result, final=True)
        return result


def main(argv: list[str] | None = None) -> int:
    quiet.apply()
    parser = argparse.ArgumentParser(prog="python -m loopline.pipelines.run")
    parser.add_argument(
        "--spec", type=Path, required=True, help="TrainingRunSpec or BatchRunSpec JSON file"
    )
    parser.add_argument("--result", type=Path, required=True, help="TrainingRunResult JSON file")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Pipeline outputs and step events (default: <result>.d beside the result file)",
    )
    parser.add_argument(
        "--termination-message",
        type=Path,
        default=None,
        help="Also write the final result, compacted to 4 KB, to this file (a container's "
        "terminationMessagePath)",
    )
    parser.add_argument(
        "--no-process-group",
        action="store_true",
        help="Stay in the caller's process group (cancelling then stops only this process)",
    )
    parser.add_argument(
        "--subprocess-steps",
        action="store_true",
        help="Run each step in its own process, as kfp.local does (default: in this process, "
        "imports paid once)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        spec = parse_run_spec(args.spec.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read the run spec {args.spec}: {exc}", file=sys.stderr)
        return 2
    workdir = args.workdir or args.result.with_name(args.result.name + ".d")
    runner = Runner(
        spec, args.result, workdir, args.termination_message, warm=not args.subprocess_steps
    )
    if not args.no_process_group and os.getpgrp() != os.getpid():
        os.setpgid(0, 0)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runner.cancel(signum)
        if not args.no_process_group:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(os.getpgrp(), signal.SIGTERM)  # the component processes
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    result = runner.run()
    log.info("run %s %s: %s", spec.run_id, result.phase, result.message)
    return 0 if result.phase == RunPhase.SUCCEEDED else 1


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown: the result is written (renamed into place) and
    the streams are flushed, and tearing down torch, MLflow, Feast and pandas module by module
    took 8 s of a 60 s run on a loaded 2-core machine (docs/profiles/pipeline.md)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
