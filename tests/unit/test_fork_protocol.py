"""The pipeline fork worker's request protocol: what each side sends, and what it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from loopline.pipelines.fork_protocol import (
    MAX_LINE,
    MAX_SOCKET_PATH,
    Ping,
    Pong,
    ProtocolError,
    Refused,
    RunRequest,
    RunStarted,
    decode_reply,
    decode_request,
    encode,
    socket_path,
)


def test_requests_and_replies_round_trip_as_one_line_each(tmp_path: Path) -> None:
    request = RunRequest(name="run r1", run_dir=tmp_path, args=["--subprocess-steps"])
    for message in (Ping(), request):
        line = encode(message)
        assert line.endswith(b"\n")
        assert line.count(b"\n") == 1
        assert decode_request(line) == message
    replies = (
        Pong(pid=7),
        RunStarted(pid=8, create_time=1.5, argv=["python", "-m", "x"]),
        Refused(reason="threads are running"),
    )
    for reply in replies:
        assert decode_reply(encode(reply)) == reply


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (b'{"op": "run", "name": "run r", "run_dir": "runs/r"}\n', "not an absolute path"),
        (
            b'{"op": "run", "name": "run r", "run_dir": "/r", "args": ["--spec", "/etc/x"]}\n',
            "are not among",
        ),
        (b'{"op": "run", "name": "run r", "run_dir": "/r", "shell": "rm"}\n', "extra"),
        (b'{"op": "exec", "argv": ["sh"]}\n', "invalid request"),
        (b'{"op": "ping"}', "ended before its newline"),
        (b"not json\n", "invalid request"),
        (b'{"op": "ping", "pad": "' + b"x" * MAX_LINE + b'"}\n', "longer than"),
    ],
)
def test_a_bad_request_is_refused_with_what_is_wrong(line: bytes, says: str) -> None:
    with pytest.raises(ProtocolError, match=says):
        decode_request(line)


def test_a_reply_cut_short_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="newline"):
        decode_reply(encode(Pong(pid=1))[:-3])
    with pytest.raises(ProtocolError, match="invalid reply"):
        decode_reply(encode(Ping()))  # a request is not a reply


def test_the_socket_lives_in_the_state_dir_when_its_path_fits(tmp_path: Path) -> None:
    assert socket_path(tmp_path / "w") == (tmp_path / "w").resolve() / "fork.sock"


def test_a_state_dir_too_deep_for_a_socket_address_gets_a_short_private_path(
    tmp_path: Path,
) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    other = tmp_path / ("d" * 60) / ("f" * 60)
    path = socket_path(deep)
    assert len(os.fsencode(path)) <= MAX_SOCKET_PATH
    assert path.parent.name == f"loopline-{os.getuid()}"
    assert path != socket_path(other)  # two operators never share a worker
    assert path == socket_path(deep)  # and one finds its own again
