"""The pipeline fork worker as a real process on a real Unix socket.

The worker here preloads only `json` (the real list takes tens of seconds): these tests are
about its protocol, its refusals and its lifetime, not about runs (the integration tests in
tests/integration/test_pipeline_fork_worker.py run real pipelines through it).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline import supervisor
from loopline.operators.backends.fork_client import PipelineForkWorker
from loopline.pipelines.fork_protocol import Pong, Refused, RunRequest, decode_reply


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[PipelineForkWorker]:
    fork = PipelineForkWorker(tmp_path / ".fork-worker", wait_ready=30.0, preload=["json"])
    record = fork.start()
    assert record is not None
    deadline = time.monotonic() + 30
    while not fork.ready():
        assert supervisor.alive(record), supervisor.log_tail(record.log)
        assert time.monotonic() < deadline, "the fork worker did not become ready"
        time.sleep(0.05)
    yield fork
    fork.close()


def _raw(fork: PipelineForkWorker, line: bytes) -> object:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(str(fork.socket))
        conn.sendall(line)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return decode_reply(data)


def test_the_worker_answers_a_ping_with_its_pid(worker: PipelineForkWorker) -> None:
    record = worker.start()  # idempotent: the same worker
    assert record is not None
    reply = _raw(worker, b'{"op": "ping"}\n')
    assert reply == Pong(pid=record.pid)
    assert (worker.socket.stat().st_mode & 0o077) == 0  # this user's only


def test_a_bad_request_is_refused_and_the_worker_keeps_serving(
    worker: PipelineForkWorker,
) -> None:
    reply = _raw(worker, b'{"op": "run", "name": "run r", "run_dir": "relative"}\n')
    assert isinstance(reply, Refused)
    assert "absolute" in reply.reason
    assert isinstance(_raw(worker, b"garbage\n"), Refused)
    assert worker.ready()


def test_a_run_directory_without_a_spec_is_refused_and_nothing_is_forked(
    worker: PipelineForkWorker, tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "r1"
    run_dir.mkdir(parents=True)
    started = worker.start_run("run r1", run_dir, [])
    assert isinstance(started, str)
    assert "holds no spec.json" in started
    assert not (run_dir / "worker.pid").exists()
    reply = _raw(worker, RunRequest(name="x", run_dir=run_dir).model_dump_json().encode() + b"\n")
    assert isinstance(reply, Refused)


def test_a_dead_worker_is_reported_and_started_again_for_later_runs(
    worker: PipelineForkWorker, tmp_path: Path
) -> None:
    first = worker.start()
    assert first is not None
    supervisor.stop(first, grace=5)
    run_dir = tmp_path / "r2"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text("{}")
    why = worker.start_run("run r2", run_dir, [])
    assert isinstance(why, str)
    assert "had died" in why
    second = worker.start()
    assert second is not None
    assert second.pid != first.pid


def test_the_worker_exits_once_its_owner_is_gone(tmp_path: Path) -> None:
    """An owner process that starts a worker and exits at once: the worker follows it."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from loopline.operators.backends.fork_client import PipelineForkWorker; "
        f"f = PipelineForkWorker(Path({str(tmp_path / 'w')!r}), preload=['json']); "
        "r = f.start(); "
        "[time.sleep(0.05) for _ in range(600) if not f.ready()]; "
        "print(r.pid, flush=True)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    record = supervisor.load_record(tmp_path / "w" / "worker.pid")
    assert record is not None
    assert str(record.pid) == out.stdout.strip()
    deadline = time.monotonic() + 20
    while supervisor.alive(record):
        assert time.monotonic() < deadline, "the worker outlived its owner"
        time.sleep(0.1)
    assert not (tmp_path / "w" / "fork.sock").exists()


def test_the_settings_switch_a_custom_command_and_a_one_shot_caller_start_no_worker(
    tmp_path: Path,
) -> None:
    from loopline.operators.backends.factory import build_pipeline_backend
    from loopline.operators.backends.pipelines import LocalPipelineBackend
    from loopline.operators.settings import OperatorSettings

    runs = tmp_path / "runs"
    cases = [
        (OperatorSettings(runs_dir=runs, fork_worker=False), True),
        (OperatorSettings(runs_dir=runs, worker_command=[sys.executable, "w.py"]), True),
        (OperatorSettings(runs_dir=runs), False),  # `loopline score --submit`: one run, exits
    ]
    for settings, long_lived in cases:
        backend = build_pipeline_backend(settings, "sqlite://", long_lived=long_lived)
        assert isinstance(backend, LocalPipelineBackend)
        assert backend.fork_worker is None
    assert not (runs / ".fork-worker").exists()
    custom = LocalPipelineBackend(
        runs, [sys.executable, "w.py"], fork_worker=PipelineForkWorker(tmp_path / "w")
    )
    assert custom.fork_worker is None  # a custom command is not the runner a worker forks
