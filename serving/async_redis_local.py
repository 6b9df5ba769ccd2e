"""A local `redis-server` for asynchronous inference in local mode (and in tests).

Started like every other local process (`loopline.supervisor`): in its own session, recorded
in `<folder>/redis.json`, adopted by the next owner while it runs. It listens on loopback
only, keeps its append-only file in `<folder>` (so a restart loses no queued request; fsync
every second) and is never the system's Redis service: a port of its own, found free.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from loopline import supervisor
from loopline.ports import free_port

HOST = "127.0.0.1"
STATE_FILE = "redis.json"
READY_TIMEOUT_S = 30.0


class LocalRedisError(RuntimeError):
    """redis-server is missing or did not start; the message says what to do."""


def redis_config(folder: Path, port: int) -> str:
    """redis.conf: loopback, this port, data in `folder`, no RDB snapshots.

    `set-proc-title no`: by default redis-server writes its process title over its command
    line and its environment. The supervisor knows the process as its own by its command line
    (it compares them before adopting or signalling a pid), and a demo finds the processes it
    started by the id in their environment; both stay as they were started."""
    return "\n".join(
        [
            f"bind {HOST}",
            f"port {port}",
            f'dir "{folder}"',
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
            "set-proc-title no",
            "",
        ]
    )


def _port_of(conf: Path) -> int:
    for line in conf.read_text().splitlines():
        if line.startswith("port "):
            return int(line.split()[1])
    raise LocalRedisError(f"{conf} names no port")


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:  # still starting
        return False


class LocalRedis:
    """One redis-server in `folder`; `start()` returns its URL (adopting a running one)."""

    def __init__(self, folder: Path, binary: str | None = None, port: int = 0) -> None:
        self.folder = folder
        self.binary = binary
        self.record: supervisor.ProcessRecord | None = None
        self.port = port  # 0: a free one

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        state = self.folder / STATE_FILE
        adopted = supervisor.adopt(state)
        if adopted is not None:
            self.record, self.port = adopted, _port_of(Path(adopted.argv[1]))
            return self.url
        binary = self.binary or shutil.which("redis-server")
        if binary is None:
            raise LocalRedisError(
                "redis-server is not installed; asynchronous inference needs it in local mode "
                "(scripts/install-system-deps.sh installs it, or point LOOPLINE_ASYNC_REDIS_URL "
                "at a running Redis)"
            )
        if any(c.isspace() for c in str(self.folder)):
            raise LocalRedisError(f"the Redis folder {self.folder} must not contain spaces")
        self.port = self.port or free_port(HOST)
        conf = self.folder / "redis.conf"
        argv = [binary, str(conf)]
        conf.write_text(redis_config(self.folder, self.port))
        self.record = supervisor.start(
            "redis-server",
            argv,
            log_file=self.folder / "redis.log",
            state_file=state,
        )
        client = redis.Redis(host=HOST, port=self.port, socket_timeout=1.0)
        try:
            supervisor.wait_until(
                self.record, lambda: _pings(client), timeout=READY_TIMEOUT_S, what="ready"
            )
        except supervisor.SupervisorError as exc:
            raise LocalRedisError(str(exc)) from exc
        finally:
            client.close()
        return self.url

    def stop_adopted(self) -> None:
        """Stop the redis-server recorded in the folder, whoever started it."""
        record = supervisor.adopt(self.folder / STATE_FILE)
        if record is not None:
            supervisor.stop(record)

    def stop(self) -> None:
        if self.record is not None:
            supervisor.stop(self.record)
            self.record = None
