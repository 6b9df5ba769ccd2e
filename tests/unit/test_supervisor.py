"""The one set of rules for local processes (loopline.supervisor), on real child processes:
which pid is still ours, how a stop escalates, that stopped children are reaped, adoption
from a record file, log tails and the sweep of orphans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loopline import supervisor
from loopline.supervisor import ProcessRecord, SupervisorError
from loopline.wait import wait_for

SLEEP = "import time; time.sleep(120)"
# Ignores SIGTERM, spawns a grandchild in its group, then says it is ready.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)
# Exits with code 3 on SIGTERM (only once it runs: a SIGSTOPped copy needs SIGCONT first).
POLITE = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def started() -> Iterator[list[ProcessRecord]]:
    """Records of the processes a test started; whatever still runs is stopped after it."""
    records: list[ProcessRecord] = []
    yield records
    for record in records:
        supervisor.stop(record, grace=1)


def _start(
    records: list[ProcessRecord],
    tmp_path: Path,
    name: str,
    script: str,
    state_file: Path | None = None,
) -> ProcessRecord:
    record = supervisor.start(
        name,
        [sys.executable, "-c", script],
        log_file=tmp_path / f"{name}.log",
        state_file=state_file,
    )
    records.append(record)
    return record


def _wait_logged(record: ProcessRecord, text: str) -> None:
    supervisor.wait_until(
        record, lambda: text in record.log.read_text(), timeout=30, what=f"logging {text!r}"
    )


def test_start_records_pid_create_time_and_command_line(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    state_file = tmp_path / "proc.json"
    record = _start(started, tmp_path, "sleeper", SLEEP, state_file)
    process = psutil.Process(record.pid)
    assert record.create_time == process.create_time()
    assert record.argv == process.cmdline() == [sys.executable, "-c", SLEEP]
    assert supervisor.alive(record)
    # Its own session and process group, so signals to the group reach only its family.
    assert os.getpgid(record.pid) == record.pid
    assert os.getsid(record.pid) == record.pid
    assert supervisor.load_record(state_file) == record


def test_a_pid_reused_by_another_process_is_not_alive_and_never_signalled(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    """The kernel recycles pids: a record whose pid now names another process (another
    program, or another copy of the same command started later) is not ours."""
    record = _start(started, tmp_path, "sleeper", SLEEP)
    other_program = record.model_copy(update={"argv": ["kube-apiserver", "--port", "1"]})
    later_copy = record.model_copy(update={"create_time": record.create_time - 5})
    assert supervisor.alive(record)
    assert not supervisor.alive(other_program)
    assert not supervisor.alive(later_copy)
    assert supervisor.stop(later_copy, grace=1) is False
    assert supervisor.stop(other_program, grace=1) is False
    assert supervisor.alive(record), "a stop on a stale record signalled the live process"


def test_stop_escalates_to_kill_after_the_grace_for_the_whole_group(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    record = _start(started, tmp_path, "stubborn", STUBBORN)
    _wait_logged(record, "ready")
    wait_for(
        lambda: len(supervisor.group_members(record.pid)) == 2,
        timeout=10,
        what="the grandchild to start",
    )
    grandchild = next(p for p in supervisor.group_members(record.pid) if p.pid != record.pid)
    child = supervisor.child_process(record.pid)
    assert child is not None
    assert supervisor.stop(record, grace=1) is True
    # SIGTERM was ignored, so it died of SIGKILL, grandchild included.
    assert child.returncode == -signal.SIGKILL
    assert not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE
    assert supervisor.group_members(record.pid) == []
    assert not supervisor.alive(record)


def test_stop_sends_sigterm_first_and_sigcont_to_a_stopped_process(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    """A process stopped with SIGSTOP acts on SIGTERM only once continued: without the
    SIGCONT it would run out the grace and be killed instead of exiting on its own."""
    record = _start(started, tmp_path, "polite", POLITE)
    _wait_logged(record, "ready")
    psutil.Process(record.pid).suspend()
    wait_for(
        lambda: psutil.Process(record.pid).status() == psutil.STATUS_STOPPED,
        timeout=10,
        what="the process to be stopped",
    )
    child = supervisor.child_process(record.pid)
    assert child is not None
    assert supervisor.stop(record, grace=30) is True
    assert child.returncode == 3, "the SIGTERM handler did not run"


def test_a_stopped_process_is_reaped(started: list[ProcessRecord], tmp_path: Path) -> None:
    """No zombie of ours outlives `stop`, and the Popen is forgotten."""
    record = _start(started, tmp_path, "sleeper", SLEEP)
    assert supervisor.child_process(record.pid) is not None
    assert supervisor.stop(record, grace=5) is True
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).ppid() != (
        psutil.Process().pid
    )
    assert supervisor.child_process(record.pid) is None
    assert supervisor.stop(record, grace=5) is False  # stopping again is a no-op


def test_a_process_that_exits_by_itself_is_not_alive(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    record = _start(started, tmp_path, "quick", "import sys; sys.exit(7)")
    wait_for(lambda: not supervisor.alive(record), timeout=10, what="the process to exit")
    assert supervisor.exit_message(record) == "exited with code 7"
    assert supervisor.stop(record) is False


def test_adopt_from_a_record_file_written_by_another_owner(tmp_path: Path) -> None:
    """An owner that started a process and went away (an operator restarted) leaves a
    record file; the next owner adopts the process from it and can stop it."""
    state_file = tmp_path / "server" / "process.json"
    owner = (
        "import sys\n"
        "from pathlib import Path\n"
        "from loopline import supervisor\n"
        f"supervisor.start('server', [sys.executable, '-c', {SLEEP!r}],\n"
        f"    log_file=Path({str(tmp_path / 'server.log')!r}),\n"
        f"    state_file=Path({str(state_file)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", owner], check=True, timeout=60)
    record = supervisor.adopt(state_file)
    assert record is not None, "the process the previous owner left running was not adopted"
    try:
        assert record.name == "server"
        assert supervisor.alive(record)
        assert supervisor.child_process(record.pid) is None  # not ours by birth
        assert "adopted process" in supervisor.exit_message(record, adopted=True)
    finally:
        assert supervisor.stop(record, grace=5) is True
    assert supervisor.adopt(state_file) is None  # it no longer runs: nothing to adopt


def test_adopt_refuses_a_missing_garbage_or_old_record(tmp_path: Path) -> None:
    state_file = tmp_path / "process.json"
    assert supervisor.adopt(state_file) is None
    state_file.write_text("{not json")
    assert supervisor.adopt(state_file) is None
    # A record without a create time (an older format) names no process for sure.
    me = psutil.Process()
    state_file.write_text(
        json.dumps({"name": "me", "pid": me.pid, "argv": me.cmdline(), "log": "/dev/null"})
    )
    assert supervisor.adopt(state_file) is None


def test_log_tail_and_errors_that_carry_it(started: list[ProcessRecord], tmp_path: Path) -> None:
    log = tmp_path / "long.log"
    log.write_text("".join(f"line {i}\n" for i in range(5000)))
    assert supervisor.log_tail(log, 3).splitlines() == ["line 4997", "line 4998", "line 4999"]
    assert supervisor.log_tail(tmp_path / "missing.log") == ""
    script = "import sys; print('fatal: no config', file=sys.stderr); sys.exit(2)"
    record = _start(started, tmp_path, "broken", script)
    with pytest.raises(SupervisorError, match="broken exited before it was ready") as info:
        supervisor.wait_until(record, lambda: False, timeout=30, what="ready")
    assert "fatal: no config" in str(info.value)


def test_wait_until_returns_when_ready_and_times_out_with_the_log(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    record = _start(started, tmp_path, "slow", "print('warming up', flush=True); " + SLEEP)
    _wait_logged(record, "warming up")
    with pytest.raises(SupervisorError, match="slow was not ready within 1 s") as info:
        supervisor.wait_until(record, lambda: False, timeout=1, what="ready")
    assert "warming up" in str(info.value)

    def refused() -> bool:
        raise ConnectionRefusedError  # an OSError: "not yet", as for a server still binding

    with pytest.raises(SupervisorError, match="was not bound"):
        supervisor.wait_until(record, refused, timeout=0.5, what="bound")


def test_orphans_are_reaped_and_wanted_processes_left_running(
    started: list[ProcessRecord], tmp_path: Path
) -> None:
    wanted_file = tmp_path / "wanted" / "process.json"
    orphan_file = tmp_path / "orphan" / "process.json"
    stale_file = tmp_path / "stale" / "process.json"
    wanted = _start(started, tmp_path, "wanted", SLEEP, wanted_file)
    orphan = _start(started, tmp_path, "orphan", SLEEP, orphan_file)
    stale = _start(started, tmp_path, "stale", "pass", stale_file)
    wait_for(lambda: not supervisor.alive(stale), timeout=10, what="the stale one to exit")
    stopped = supervisor.reap_orphans(
        [wanted_file, orphan_file, stale_file], wanted=lambda path: path == wanted_file
    )
    assert stopped == [orphan.pid]
    assert not supervisor.alive(orphan)
    assert supervisor.alive(wanted)
    assert wanted_file.exists()
    assert not orphan_file.exists()
    assert not stale_file.exists()


def test_a_secret_on_the_command_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SupervisorError, match="secret environment variable"):
        supervisor.start(
            "leaky",
            [sys.executable, "-c", SLEEP, "--token=hunter2hunter2"],
            log_file=tmp_path / "leaky.log",
            env={"MODEL_TOKEN": "hunter2hunter2"},
        )
    assert not (tmp_path / "leaky.log").exists()


def test_a_missing_program_is_a_supervisor_error(tmp_path: Path) -> None:
    with pytest.raises(SupervisorError, match="missing: cannot start"):
        supervisor.start("missing", [str(tmp_path / "nope")], log_file=tmp_path / "m.log")
