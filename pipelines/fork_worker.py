"""The pipeline fork worker: imports a run's heavy modules once, then forks one child per run.

    python -m loopline.pipelines.fork_worker --socket PATH [--owner PID]

Why: a local run in a fresh `python -m loopline.pipelines.run` paid ~24 s of imports (torch,
MLflow, Feast, pandas, great_expectations, kfp) before its first step, a third of its wall
time on a loaded 2-core machine (docs/profiles/pipeline.md). The local pipeline backend asks
this process (`loopline.pipelines.fork_protocol`, over a Unix socket) to start a run instead;
the forked child starts with every one of those modules imported.

The child is the run's process exactly as a fresh one would be: it leads its own session and
process group (cancel stops the group), its pid, create time and command line are recorded
in the run directory's `worker.pid` before the request is answered (so a restarted operator
finds it), its output goes to the run's `worker.log`, it runs `loopline.pipelines.run.main`
with the same arguments, and its exit code lands in `rc` (written by the child, or by this
worker when it reaps a child that a signal ended).

Why fork is safe here: this process never runs a step, opens a store, a socket other than its
listener, or a Python thread (a request is refused, and the backend starts a fresh process,
if `threading.active_count()` is not 1). torch is imported but never computes, so its
intra-op and inter-op pools do not exist yet (they are created at a child's first op).
Importing numpy starts OpenBLAS's worker threads and importing pyarrow (through
great_expectations) jemalloc's background thread; both libraries register `pthread_atfork`
handlers that quiesce their threads and locks around `fork` and restart them in the child,
which is what makes numpy and pyarrow usable under `multiprocessing`'s fork too. The native
threads present are logged at start. Linux only (fork without exec).

The worker exits when its owner (the operator process that started it) is gone, so a worker
never outlives the code it imported; runs it forked keep running (their own sessions) and a
new operator finds them through their records, as it finds fresh-process runs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

import psutil

from loopline import quiet
from loopline.pipelines.fork_protocol import (
    MAX_LINE,
    Ping,
    Pong,
    ProtocolError,
    Refused,
    RunRequest,
    RunStarted,
    decode_request,
    encode,
)

log = logging.getLogger("loopline.pipelines.fork_worker")

LOG_FILE = "worker.log"
PID_FILE = "worker.pid"
RC_FILE = "rc"
POLL_SECONDS = 0.2
# What a run imports before or during its steps: imported here once, inherited by each child.
PRELOAD = (
    "pandas",
    "torch",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "feast",
    "great_expectations",
    "kfp.local",
    "kfp.dsl.executor_main",
    "loopline.pipelines.run",
    "loopline.pipelines.warm",
    "loopline.pipelines.batch",
    "loopline.pipelines.training",
    "loopline.components.steps",
    "loopline.components.model_steps",
    "loopline.components.batch_steps",
    "loopline.data.features",
    "loopline.data.quality",
    "loopline.models.training",
    "loopline.models.bundle",
    "loopline.models.evaluation",
    "loopline.models.evaluation_split",
    "loopline.tracking.champion",
    "loopline.tracking.experiments",
    "loopline.tracking.gate",
    "loopline.tracking.lineage",
    "loopline.tracking.publish",
    "loopline.tracking.registry",
    "loopline.batch.job",
)


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    for name in modules:
        importlib.import_module(name)


def native_threads() -> list[str]:
    """The names of this process's OS threads (the main one included)."""
    names = []
    for task in sorted(os.listdir("/proc/self/task")):
        with contextlib.suppress(OSError):
            names.append(Path(f"/proc/self/task/{task}/comm").read_text().strip())
    return names


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) <= MAX_LINE:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _write_rc(run_dir: Path, code: int) -> None:
    tmp = run_dir / f"{RC_FILE}.tmp"
    tmp.write_text(f"{code}\n")
    tmp.replace(run_dir / RC_FILE)


def _child(request: RunRequest, inherited: list[socket.socket], leads: int) -> int:
    """The run's process: its own session, the run's directory and log, the runner's main."""
    for sock in inherited:
        sock.close()
    os.setsid()
    os.write(leads, b"1")
    os.close(leads)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    os.chdir(request.run_dir)
    out = os.open(LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    os.close(null)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    print(f"\n--- {stamp} starting {request.name} (forked from pipeline fork worker "
          f"pid {os.getppid()})", flush=True)  # fmt: skip
    # A fresh interpreter seeds numpy's global generator from the OS; a fork would inherit
    # the worker's state, the same in every child.
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    from loopline.pipelines import run

    code = 1
    try:
        code = run.main(["--spec", "spec.json", "--result", "result.json", *request.args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the child must end here, never return into the worker's loop
        traceback.print_exc()
    with contextlib.suppress(OSError):
        _write_rc(request.run_dir, code)
    run.exit_now(code)
    return code  # not reached: exit_now leaves the process


class ForkWorker:
    """The listening loop: answers pings, forks runs, reaps children."""

    def __init__(self, listener: socket.socket, owner: int | None) -> None:
        self.listener = listener
        self.owner = owner
        self.children: dict[int, Path] = {}
        self.cmdline = psutil.Process().cmdline()

    def serve(self) -> None:
        while self.owner is None or os.getppid() == self.owner:
            self.reap()
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            with conn:
                self.handle(conn)
        log.info("owner %s is gone; the fork worker exits (forked runs keep running)", self.owner)

    def handle(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        try:
            request = decode_request(read_line(conn))
        except (ProtocolError, OSError) as exc:
            reply: Pong | RunStarted | Refused = Refused(reason=str(exc))
        else:
            reply = (
                Pong(pid=os.getpid()) if isinstance(request, Ping) else self.start(request, conn)
            )
        with contextlib.suppress(OSError):
            conn.sendall(encode(reply))

    def start(self, request: RunRequest, conn: socket.socket) -> RunStarted | Refused:
        from loopline import supervisor

        if not (request.run_dir / "spec.json").is_file():
            return Refused(reason=f"{request.run_dir} holds no spec.json")
        if threading.active_count() != 1:
            names = [t.name for t in threading.enumerate()]
            return Refused(reason=f"threads are running in the fork worker: {names}")
        sys.stdout.flush()
        sys.stderr.flush()
        # The child says when it leads its own group, so that the run is answered as started
        # only once cancelling it (a signal to its group) reaches everything it will start.
        led, leads = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 70
            try:
                os.close(led)
                code = _child(request, [self.listener, conn], leads)
            finally:
                os._exit(code)
        os.close(leads)
        self.children[pid] = request.run_dir
        with os.fdopen(led, "rb") as sync:
            sync.read(1)  # b"" if the child ended first: its exit is reaped as any other
        try:
            create_time = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0
        record = supervisor.ProcessRecord(
            name=request.name,
            pid=pid,
            create_time=create_time,
            argv=self.cmdline,
            log=request.run_dir / LOG_FILE,
        )
        supervisor.save_record(request.run_dir / PID_FILE, record)
        log.info("forked %s: pid %d", request.name, pid)
        return RunStarted(pid=pid, create_time=create_time, argv=self.cmdline)

    def reap(self) -> None:
        """Collect finished children; one a signal ended gets the code a shell would report."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run_dir = self.children.pop(pid, None)
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code
            log.info("run process %d exited with code %d", pid, code)
            if run_dir is not None and not (run_dir / RC_FILE).exists():
                with contextlib.suppress(OSError):
                    _write_rc(run_dir, code)


def listen(path: Path) -> socket.socket:
    """Bind the socket (replacing a dead worker's), readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(16)
    listener.settimeout(POLL_SECONDS)
    return listener


def main(argv: list[str] | None = None) -> int:
    quiet.apply()
    parser = argparse.ArgumentParser(prog="python -m loopline.pipelines.fork_worker")
    parser.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    parser.add_argument(
        "--owner", type=int, default=None, help="Exit once this process is no longer the parent"
    )
    parser.add_argument(
        "--preload",
        default=",".join(PRELOAD),
        help="Comma-separated modules to import before listening (default: what a run needs)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    preload(tuple(name for name in args.preload.split(",") if name))
    # After the imports, as in a fresh runner (whose logging starts before its steps import
    # great_expectations, which logs its decorators at INFO to an already-configured root).
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Listening only now: a connection that succeeds means the imports are done.
    listener = listen(args.socket)
    log.info(
        "ready in %.1f s on %s; Python threads %s; OS threads %s",
        time.perf_counter() - began,
        args.socket,
        [t.name for t in threading.enumerate()],
        native_threads(),
    )
    inode = args.socket.stat().st_ino
    try:
        ForkWorker(listener, args.owner).serve()
    finally:
        listener.close()
        # Only our own socket: a newer worker may have bound the path since.
        with contextlib.suppress(FileNotFoundError):
            if args.socket.stat().st_ino == inode:
                args.socket.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
