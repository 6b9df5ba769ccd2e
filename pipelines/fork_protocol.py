"""The fork worker's request protocol: one JSON line in, one JSON line out, per connection.

The local pipeline backend asks its pipeline fork worker (`loopline.pipelines.fork_worker`)
over a Unix socket to start a run: `RunRequest` names the run's directory (which holds its
`spec.json`) and the runner's arguments; the worker forks, records the child as the run's
process (`worker.pid` in the run directory, as a fresh process would be recorded) and answers
`RunStarted`, or `Refused` with the reason (the backend then starts a fresh process). `Ping`
asks whether the worker is ready. Kept apart from the worker and the client so both, and
their tests, share one definition and neither needs the other's imports.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# The longest request or reply line either side reads: a request is a path and a few flags.
MAX_LINE = 64 * 1024
# A Unix socket's path must fit `sun_path` (108 bytes on Linux, with the terminating NUL).
MAX_SOCKET_PATH = 100
SOCKET_NAME = "fork.sock"
# Runner flags a request may carry: the runner's own, nothing that names another file.
ALLOWED_ARGS = frozenset({"--subprocess-steps"})


class ProtocolError(ValueError):
    """A request or reply that is not valid protocol; the message says what is wrong."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ping(_Message):
    op: Literal["ping"] = "ping"


class RunRequest(_Message):
    op: Literal["run"] = "run"
    name: str = Field(min_length=1, max_length=300, description="For logs: `run <id>`.")
    run_dir: Path = Field(description="Absolute; holds spec.json; the child's cwd and log.")
    args: list[str] = Field(default_factory=list, description="Extra runner flags.")


class Pong(_Message):
    op: Literal["pong"] = "pong"
    pid: int


class RunStarted(_Message):
    op: Literal["started"] = "started"
    pid: int
    create_time: float
    argv: list[str]


class Refused(_Message):
    op: Literal["refused"] = "refused"
    reason: str


Request = Annotated[Ping | RunRequest, Field(discriminator="op")]
Reply = Annotated[Pong | RunStarted | Refused, Field(discriminator="op")]
_REQUEST: TypeAdapter[Ping | RunRequest] = TypeAdapter(Request)
_REPLY: TypeAdapter[Pong | RunStarted | Refused] = TypeAdapter(Reply)


def encode(message: _Message) -> bytes:
    return message.model_dump_json().encode() + b"\n"


def _line(data: bytes, what: str) -> bytes:
    if len(data) > MAX_LINE:
        raise ProtocolError(f"{what} is longer than {MAX_LINE} bytes")
    if not data.endswith(b"\n"):
        raise ProtocolError(f"{what} ended before its newline (connection closed early?)")
    return data[:-1]


def decode_request(data: bytes) -> Ping | RunRequest:
    """A request line, checked: the run directory absolute, only known runner flags."""
    try:
        request = _REQUEST.validate_json(_line(data, "request"))
    except ValidationError as exc:
        raise ProtocolError(f"invalid request: {exc.errors(include_url=False)}") from exc
    if isinstance(request, RunRequest):
        if not request.run_dir.is_absolute():
            raise ProtocolError(f"run_dir {str(request.run_dir)!r} is not an absolute path")
        unknown = [arg for arg in request.args if arg not in ALLOWED_ARGS]
        if unknown:
            raise ProtocolError(f"args {unknown} are not among {sorted(ALLOWED_ARGS)}")
    return request


def decode_reply(data: bytes) -> Pong | RunStarted | Refused:
    try:
        return _REPLY.validate_json(_line(data, "reply"))
    except ValidationError as exc:
        raise ProtocolError(f"invalid reply: {exc.errors(include_url=False)}") from exc


def socket_path(state_dir: Path) -> Path:
    """Where the worker of `state_dir` listens: in it when the path fits a socket address,
    else in a per-user directory of the temp dir, named by a hash of `state_dir` (so two
    operators with their own state dirs never share a worker)."""
    path = state_dir.resolve() / SOCKET_NAME
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(state_dir.resolve())).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"loopline-{os.getuid()}" / f"{digest}.sock"
