"""The local pipeline backend's side of the pipeline fork worker.

One worker per operator (`loopline.pipelines.fork_worker`), started at the operator's start
(or at the first run) as a supervised process in the state dir (`.fork-worker/`: its socket,
log and process record). `start_run` asks it to fork a run; any reason it cannot (the worker
could not start, died, is still importing after `wait_ready` seconds, refused, or did not
answer) comes back as text, and the backend starts the run as a fresh process instead and
logs why: a run never fails because of the worker.

Waiting for a worker that is still importing is bounded by `wait_ready` and is no worse than
the fallback: a fresh process would pay the same imports while competing for the same cores.
A worker that died is started again for later runs (up to `MAX_STARTS` times per operator)
but not waited for: the run in hand starts fresh at once.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from loopline import supervisor
from loopline.pipelines.fork_protocol import (
    Ping,
    Pong,
    ProtocolError,
    Refused,
    RunRequest,
    RunStarted,
    decode_reply,
    encode,
    socket_path,
)

log = logging.getLogger(__name__)

STATE_DIR = ".fork-worker"  # run ids never start with a dot: no run directory can clash
MAX_STARTS = 3
REPLY_TIMEOUT = 30.0  # a fork and a record write; generous for a loaded machine
_POLL = 0.25


class PipelineForkWorker:
    """Starts, adopts and talks to the fork worker of one state directory."""

    def __init__(
        self,
        state_dir: Path,
        *,
        wait_ready: float = 60.0,
        preload: list[str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.socket = socket_path(state_dir)
        self.wait_ready = wait_ready
        self.argv = [sys.executable, "-m", "loopline.pipelines.fork_worker"]
        self.argv += ["--socket", str(self.socket), "--owner", str(os.getpid())]
        if preload is not None:  # tests: a worker that imports little starts in a second
            self.argv += ["--preload", ",".join(preload)]
        self._lock = threading.Lock()
        self._record: supervisor.ProcessRecord | None = None
        self._starts = 0

    @property
    def record_file(self) -> Path:
        return self.state_dir / "worker.pid"

    def start(self) -> supervisor.ProcessRecord | None:
        """The running worker, started if there is none (idempotent); None if it cannot be."""
        with self._lock:
            if self._record is not None and supervisor.alive(self._record):
                return self._record
            if self._starts >= MAX_STARTS:
                return None
            self._starts += 1
            # A previous operator's worker exits on its own once that operator is gone.
            supervisor.reap_orphan(self.record_file, grace=5.0, what="pipeline fork worker")
            try:
                self._record = supervisor.start(
                    "pipeline fork worker",
                    self.argv,
                    log_file=self.state_dir / "worker.log",
                    state_file=self.record_file,
                )
            except supervisor.SupervisorError as exc:
                log.warning("cannot start the pipeline fork worker: %s", exc)
                self._record = None
            return self._record

    def _ask(self, message: Ping | RunRequest, timeout: float) -> Pong | RunStarted | Refused:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.socket))
            conn.sendall(encode(message))
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        return decode_reply(data)

    def ready(self) -> bool:
        try:
            return isinstance(self._ask(Ping(), timeout=5.0), Pong)
        except (OSError, ProtocolError):
            return False

    def _wait(self, record: supervisor.ProcessRecord) -> str | None:
        """None once the worker answers; else why not (it died or took too long)."""
        deadline = time.monotonic() + self.wait_ready
        while True:
            if not supervisor.alive(record):
                tail = supervisor.log_tail(record.log, 3).replace("\n", " | ")
                return f"the fork worker (pid {record.pid}) exited: {tail or 'no log'}"
            if self.ready():
                return None
            if time.monotonic() >= deadline:
                return f"the fork worker was not ready within {self.wait_ready:.0f} s"
            time.sleep(_POLL)

    def start_run(self, name: str, run_dir: Path, args: list[str]) -> RunStarted | str:
        """Ask the worker to fork the run in `run_dir`: its reply, or why it could not."""
        known = self._record
        record = self.start()
        if record is None:
            return "the fork worker could not be started (see the operator's log)"
        if known is not None and record is not known:
            return f"the fork worker (pid {known.pid}) had died; a new one is starting"
        why = self._wait(record)
        if why is not None:
            return why
        try:
            reply = self._ask(
                RunRequest(name=name, run_dir=run_dir.resolve(), args=args), REPLY_TIMEOUT
            )
        except (OSError, ProtocolError) as exc:
            return f"the fork worker did not answer: {exc}"
        if isinstance(reply, Refused):
            return f"the fork worker refused: {reply.reason}"
        if not isinstance(reply, RunStarted):
            return f"the fork worker answered {reply.op!r} to a run request"
        return reply

    def close(self) -> None:
        """Stop the worker (forked runs keep running: they are in their own sessions)."""
        with self._lock:
            if self._record is not None:
                supervisor.stop(self._record, grace=5.0)
                self._record = None
                self.record_file.unlink(missing_ok=True)
