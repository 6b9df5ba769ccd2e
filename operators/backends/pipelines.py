"""Pipeline backends: where training runs execute.

`PipelineBackend` is the interface the operator uses. Every method is keyed by the run id the
builders derive from (uid, generation, cause), and `submit` is idempotent: submitting a run id
the backend already knows returns it instead of starting another, which is how a restarted
operator adopts runs in flight.

`LocalPipelineBackend` runs each training run as a worker process
(`python -m loopline.pipelines.run --spec spec.json --result result.json`) in its own process
group, in a directory named after the run id that holds the spec, the result JSON the worker
updates as it goes, its log, its process record (`worker.pid`: pid, create time, command line,
so a reused pid is never taken for the worker) and its exit code. Everything is on disk, so a
new operator process finds runs started by an old one; the exit code is written by a small `sh`
wrapper so it survives the operator, and cancelling stops the whole group (SIGTERM, then
SIGKILL).

With a `PipelineForkWorker` (the operator's default, `OperatorSettings.fork_worker`), a run is
forked from a worker that imported the run's modules once (`loopline.pipelines.fork_worker`)
instead: the child leads its own group, is recorded in the same `worker.pid` (its command line
is the worker's), logs to the same `worker.log` and writes the same `rc`, so status, cancel and
adoption by a new operator do not tell the two apart. Whenever the worker cannot fork the run,
it starts as a fresh process and the log says why.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from loopline import supervisor
from loopline.operators.backends.fork_client import PipelineForkWorker
from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.types.batch import RunSpec
from loopline.types.runs import RunPhase, TrainingRunResult

log = logging.getLogger(__name__)

TERMINAL = frozenset({RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED})
# `--no-process-group`: the runner stays in the group the wrapper leads, so cancel (killpg)
# reaches it and every step process it started.
DEFAULT_WORKER = [sys.executable, "-m", "loopline.pipelines.run", "--no-process-group"]
# The wrapper records the worker's exit code next to its result, even if the operator is gone.
_WRAPPER = '"$@"; rc=$?; echo $rc > rc.tmp && mv rc.tmp rc; exit $rc'
PID_FILE = "worker.pid"


class PipelineBackend(Protocol):
    def submit(self, spec: RunSpec) -> str:
        """Start the run (or adopt it if its id is known) and return its id."""
        ...

    def status(self, run_id: str) -> TrainingRunResult | None:
        """The run as the backend sees it now; None if the backend does not know the id."""
        ...

    def cancel(self, run_id: str) -> None:
        """Stop the run if it is in flight (idempotent)."""
        ...

    def runs_of(self, namespace: str, model: str) -> list[str]:
        """Ids of the runs the backend knows for a Model (for cleanup and adoption)."""
        ...


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class LocalPipelineBackend:
    """Training runs as supervised local worker processes, one directory per run id."""

    def __init__(
        self,
        runs_dir: Path,
        command: list[str] | None = None,
        *,
        fork_worker: PipelineForkWorker | None = None,
        runner_args: list[str] | None = None,
    ) -> None:
        self.runs_dir = runs_dir
        self.command = list(command) if command else list(DEFAULT_WORKER)
        # Forking runs the default runner only: a custom command is not that program.
        self.fork_worker = fork_worker if not command else None
        self.runner_args = list(runner_args or [])
        self._lock = threading.Lock()

    def _fork(self, spec: RunSpec, run_dir: Path) -> bool:
        """Fork the run from the worker; False (and why, in the logs) if it must start fresh."""
        if self.fork_worker is None:
            return False
        name = f"run {spec.run_id}"
        started = self.fork_worker.start_run(name, run_dir, self.runner_args)
        if isinstance(started, str):
            log.warning("%s starts as a fresh process: %s", name, started)
            with (run_dir / "worker.log").open("a") as out:
                out.write(f"--- not forked from the pipeline fork worker: {started}\n")
            return False
        log.info("started run %s (pid %d, forked) in %s", spec.run_id, started.pid, run_dir)
        return True

    def close(self) -> None:
        """Stop the fork worker, if any (runs it forked keep running)."""
        if self.fork_worker is not None:
            self.fork_worker.close()

    def _dir(self, run_id: str) -> Path:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise BackendRejected(f"invalid run id {run_id!r}")
        return self.runs_dir / run_id

    def submit(self, spec: RunSpec) -> str:
        run_dir = self._dir(spec.run_id)
        with self._lock:
            if (run_dir / "spec.json").is_file():
                return spec.run_id  # known: adopt, never start a second one
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
                _atomic_write(run_dir / "spec.json", spec.model_dump_json(by_alias=True, indent=1))
            except OSError as exc:
                raise BackendUnavailable(
                    f"local pipeline backend cannot write run directory {run_dir}: {exc}"
                ) from exc
            if self._fork(spec, run_dir):
                return spec.run_id
            argv = [*self.command, "--spec", "spec.json", "--result", "result.json"]
            argv += self.runner_args
            try:
                record = supervisor.start(
                    f"run {spec.run_id}",
                    ["/bin/sh", "-c", _WRAPPER, "loopline-run", *argv],
                    log_file=run_dir / "worker.log",
                    cwd=run_dir,
                    state_file=run_dir / PID_FILE,
                )
            except supervisor.SupervisorError as exc:
                (run_dir / "spec.json").unlink(missing_ok=True)
                raise BackendRejected(f"cannot start worker {argv[0]!r}: {exc}") from exc
            log.info("started run %s (pid %d) in %s", spec.run_id, record.pid, run_dir)
            return spec.run_id

    def _alive(self, run_dir: Path) -> bool:
        record = supervisor.load_record(run_dir / PID_FILE)
        return record is not None and supervisor.alive(record)

    def status(self, run_id: str) -> TrainingRunResult | None:
        run_dir = self._dir(run_id)
        if not (run_dir / "spec.json").is_file():
            return None
        result = TrainingRunResult(run_id=run_id, phase=RunPhase.PENDING)
        try:
            text = (run_dir / "result.json").read_text()
            result = TrainingRunResult.model_validate_json(text)
        except FileNotFoundError:
            pass
        except (OSError, ValidationError) as exc:
            # The worker writes atomically, so this is a broken worker, not a torn read.
            return TrainingRunResult(
                run_id=run_id, phase=RunPhase.FAILED, message=f"unreadable result.json: {exc}"
            )
        if result.phase in TERMINAL:
            return result
        if (run_dir / "cancelled").exists():
            return result.model_copy(
                update={"phase": RunPhase.CANCELLED, "finished_at": datetime.now(UTC)}
            )
        if self._alive(run_dir):
            return result
        rc = (run_dir / "rc").read_text().strip() if (run_dir / "rc").exists() else "unknown"
        tail = supervisor.log_tail(run_dir / "worker.log", 3).splitlines()
        return result.model_copy(
            update={
                "phase": RunPhase.FAILED,
                "finished_at": datetime.now(UTC),
                "message": f"worker exited (code {rc}) before finishing"
                + (f": {' | '.join(tail)}" if tail else "")
                + f" (log: {run_dir / 'worker.log'})",
            }
        )

    def cancel(self, run_id: str) -> None:
        run_dir = self._dir(run_id)
        if not (run_dir / "spec.json").is_file():
            return
        (run_dir / "cancelled").touch()
        record = supervisor.load_record(run_dir / PID_FILE)
        if record is None:
            return
        # A cancel that returns while the worker lives would let a deletion finish with
        # training still running: stop() waits for the group's death, or raises.
        try:
            supervisor.stop(record, grace=10.0)
        except supervisor.SupervisorError as exc:
            raise BackendUnavailable(f"run {run_id}: {exc}") from exc

    def runs_of(self, namespace: str, model: str) -> list[str]:
        if not self.runs_dir.is_dir():
            return []
        found = []
        for spec_file in sorted(self.runs_dir.glob("*/spec.json")):
            try:
                spec = json.loads(spec_file.read_text())
            except (OSError, ValueError):
                continue
            if spec.get("namespace") == namespace and spec.get("modelName") == model:
                found.append(spec_file.parent.name)
        return found
