"""Local processes, started, adopted, watched and stopped by one set of rules.

Model servers, drift monitors, training workers and the demo's own services all run as
local processes that must outlive the Python process that started them (an operator that is
killed and restarted adopts them instead of starting copies). So every one of them:

- runs in its own session (it leads its own process group, pgid == pid), so it ignores the
  terminal's SIGHUP and stopping it reaches everything it spawned;
- is written down as a `ProcessRecord` (pid, the kernel's create time, command line, log) in
  a state file next to its other files;
- counts as ours only while a process with that pid runs, is not a zombie, has the recorded
  create time and the recorded command line: a pid the kernel recycled for another process
  (even another copy of the same command) is never adopted and never signalled;
- is stopped with grace: SIGTERM to the group, then SIGKILL, and the call returns once the
  group is gone (or raises), so a caller never reports "stopped" while it still runs.

`loopline.watching.Supervisor` adds the watching: a health probe per process, a restart with
exponential backoff when it dies, and a log of every failure with the process's name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import psutil
from pydantic import BaseModel, ConfigDict, ValidationError

from loopline.wait import WaitTimeout, wait_for

log = logging.getLogger(__name__)

# How far two readings of one process's create time may differ (psutil derives it from the
# boot time and clock ticks, so it is stable to well under this).
_CREATE_TIME_TOLERANCE_S = 0.05
# Environment names whose values are secrets: they must never appear on a command line,
# which every local user can read in /proc.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|PRIVATE_KEY", re.IGNORECASE)
_MIN_SECRET_LEN = 6

__all__ = [
    "ProcessRecord",
    "SupervisorError",
    "adopt",
    "alive",
    "child_process",
    "exit_message",
    "group_members",
    "load_record",
    "log_tail",
    "reap_orphan",
    "reap_orphans",
    "start",
    "stop",
    "stop_pids",
    "wait_until",
]


class SupervisorError(RuntimeError):
    """A process could not be started or stopped; the message says which and why."""


class ProcessRecord(BaseModel):
    """One started process: it leads its own process group (pgid == pid)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    pid: int
    create_time: float
    argv: list[str]
    log: Path


# Popen objects of the processes this Python process started, so their exit codes are known
# and none stays a zombie (a reaper thread waits for each).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()


def child_process(pid: int) -> subprocess.Popen[bytes] | None:
    """The Popen of `pid` if this process started it (None for an adopted process)."""
    with _CHILDREN_LOCK:
        return _CHILDREN.get(pid)


def _check_no_secrets(argv: list[str], env: Mapping[str, str]) -> None:
    secrets = [
        value
        for name, value in env.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LEN
    ]
    for arg in argv:
        for secret in secrets:
            if secret in arg:
                raise SupervisorError(
                    f"the command line of {argv[0]!r} carries the value of a secret environment "
                    "variable; pass secrets in the environment or a file (command lines are "
                    "readable by every local user)"
                )


def save_record(path: Path, record: ProcessRecord) -> None:
    """Write atomically, so a concurrent reader never sees half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record.model_dump(mode="json"), indent=1) + "\n")
    tmp.replace(path)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log (read from its last 64 KiB), for error messages; "" when
    there is no log."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def load_record(path: Path) -> ProcessRecord | None:
    """The record in `path`, or None when there is none or it cannot be read (a file from
    an older version, or garbage): then nothing is adopted and nothing is signalled."""
    try:
        return ProcessRecord.model_validate_json(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        log.warning("ignoring unreadable process record %s: %s", path, exc)
        return None


def adopt(state_file: Path) -> ProcessRecord | None:
    """The process a previous owner recorded in `state_file`, if it still runs and is the
    one recorded (see `alive`); None otherwise: then there is nothing to adopt."""
    record = load_record(state_file)
    if record is None or not alive(record):
        return None
    return record


def start(
    name: str,
    argv: list[str],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    state_file: Path | None = None,
) -> ProcessRecord:
    """Start `argv` detached in its own session, stdout and stderr appended to `log_file`,
    and record it (in `state_file` too, when given)."""
    environment = dict(os.environ if env is None else env)
    _check_no_secrets(argv, environment)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {name}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SupervisorError(f"{name}: cannot start {argv[0]!r}: {exc}") from exc
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc
    threading.Thread(target=_reap, args=(proc,), name=f"reap-{name}", daemon=True).start()
    # Popen returns after the exec, so this is the create time of the new program.
    try:
        create_time = psutil.Process(proc.pid).create_time()
    except psutil.NoSuchProcess:
        create_time = 0.0  # already gone (and reaped): a record that matches nothing
    record = ProcessRecord(
        name=name, pid=proc.pid, create_time=create_time, argv=list(argv), log=log_file
    )
    if state_file is not None:
        save_record(state_file, record)
    log.info("started %s (pid %d)", name, proc.pid)
    return record


def _reap(proc: subprocess.Popen[bytes]) -> None:
    proc.wait()


def alive(record: ProcessRecord) -> bool:
    """Whether the recorded process still runs and is the one recorded: same pid, same
    create time, same command line. A zombie has finished."""
    try:
        process = psutil.Process(record.pid)
        with process.oneshot():
            if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
                return False
            if abs(process.create_time() - record.create_time) > _CREATE_TIME_TOLERANCE_S:
                return False
            cmdline = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    # Empty only for an instant right after exec: not evidence of another program.
    return not cmdline or cmdline == record.argv


def exit_message(record: ProcessRecord, *, adopted: bool = False) -> str:
    """How the process ended, as far as this process can know (the exit code of a process
    another owner started went to that owner; its log may say more)."""
    if adopted:
        return f"adopted process {record.pid} exited (its code is in {record.log})"
    child = child_process(record.pid)
    if child is not None:
        # Dead already; its reaper thread may not have collected the code yet.
        with contextlib.suppress(subprocess.TimeoutExpired):
            return f"exited with code {child.wait(timeout=2)}"
        return "exited (code not collected yet)"
    return f"process {record.pid} exited (not started here: its code is in {record.log})"


def failure(record: ProcessRecord, what: str, lines: int = 25) -> str:
    """`what` happened to the process, with the last lines of its log: an error message
    that says why, not only that."""
    tail = log_tail(record.log, lines)
    return f"{record.name} {what}; last lines of {record.log}:\n{tail or '(empty log)'}"


def wait_until(
    record: ProcessRecord,
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> None:
    """Poll `ready` until it holds (OSError counts as "not yet": a server still binding);
    fail at once, with the log's tail, if the process exits meanwhile."""

    def probe() -> bool:
        if not alive(record):
            raise SupervisorError(failure(record, f"exited before it was {what}"))
        return ready()

    try:
        wait_for(probe, timeout=timeout, what=f"{record.name} {what}", interval=interval,
                 ignore=(OSError,))  # fmt: skip
    except WaitTimeout as exc:
        raise SupervisorError(failure(record, f"was not {what} within {timeout:.0f} s")) from exc


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) members of process group `pgid`."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) != pgid:
                continue
        except (ProcessLookupError, PermissionError):
            continue
        if process.info["status"] not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            members.append(process)
    return members


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return not group_members(pgid)


def _leads_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def stop(record: ProcessRecord, grace: float = 10.0) -> bool:
    """Stop the recorded process and its group: SIGTERM, up to `grace` seconds, then
    SIGKILL; return once it is gone. True when it was running. Raises SupervisorError if
    the group survives SIGKILL (it is then still ours to stop: the caller retries).

    Signals go only to a process that is still the one recorded (see `alive`); once the
    leader is dead its group id cannot be recycled while any member lives, so the SIGKILL
    of the group hits only ours."""
    if not alive(record):
        _forget_child(record.pid)
        return False
    pgid = record.pid if _leads_group(record.pid) else None

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if pgid is not None:
                os.killpg(pgid, sig)
            else:
                os.kill(record.pid, sig)

    def gone() -> bool:
        if pgid is not None:
            return _group_gone(pgid)
        return not alive(record)

    send(signal.SIGTERM)
    send(signal.SIGCONT)  # as init systems do: a stopped (SIGSTOP) process acts on it too
    try:
        wait_for(gone, timeout=grace, interval=0.05, what=f"{record.name} to stop on SIGTERM")
    except WaitTimeout:
        log.warning(
            "%s (pid %d) ignored SIGTERM for %.0f s; killing it", record.name, record.pid, grace
        )
        send(signal.SIGKILL)
        try:
            wait_for(gone, timeout=10.0, interval=0.05, what=f"{record.name} to die on SIGKILL")
        except WaitTimeout as exc:
            raise SupervisorError(
                f"{record.name} (pid {record.pid}) survived SIGKILL: {exc}"
            ) from exc
    _forget_child(record.pid)
    return True


def _forget_child(pid: int) -> None:
    """Reap our child once it is dead, so no zombie outlives `stop` (its reaper thread may
    not have run yet), and forget it."""
    child = child_process(pid)
    if child is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=5)
    with _CHILDREN_LOCK:
        if child.returncode is not None:
            _CHILDREN.pop(pid, None)


def stop_pids(pids: Iterable[int], grace: float = 10.0) -> list[int]:
    """SIGTERM processes known only by pid (found by a sweep, so just looked up), SIGKILL
    what is left after `grace`; the pids that had to be killed."""
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process = psutil.Process(pid)
            process.terminate()
            processes.append(process)
    _, left = psutil.wait_procs(processes, timeout=grace)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.kill()
    psutil.wait_procs(left, timeout=5)
    return [process.pid for process in left]


def reap_orphan(state_file: Path, grace: float = 10.0, *, what: str = "process") -> int | None:
    """Stop the process recorded in `state_file` if it still runs (a previous owner was
    killed before it could stop it: it runs in its own session, so it outlives its owner and
    would keep its ports and memory), and remove the file. The pid stopped, if any."""
    record = load_record(state_file)
    stopped = None
    if record is not None and alive(record):
        log.warning("stopping %s %s (pid %d) left running", what, record.name, record.pid)
        stop(record, grace)
        stopped = record.pid
    state_file.unlink(missing_ok=True)
    return stopped


def reap_orphans(
    state_files: Iterable[Path], wanted: Callable[[Path], bool], grace: float = 10.0
) -> list[int]:
    """Stop every recorded process that is no longer wanted; the pids stopped."""
    stopped = []
    for state_file in state_files:
        if wanted(state_file):
            continue
        pid = reap_orphan(state_file, grace, what="orphaned process")
        if pid is not None:
            stopped.append(pid)
    return stopped
