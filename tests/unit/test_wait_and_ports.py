"""The shared wait and free-port helpers."""

from __future__ import annotations

import itertools
import socket

import pytest

from loopline.ports import free_port, free_ports, port_is_free
from loopline.wait import WaitTimeout, wait_for


def test_wait_for_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert (
        wait_for(lambda: next(counter) >= 2 and "ready", timeout=5, what="x", interval=0) == "ready"
    )


def test_wait_for_times_out_naming_what_was_seen_last() -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_for(lambda: None, timeout=0.05, what="the run", interval=0.01)
    assert info.value.last is None
    assert "the run" in str(info.value)


def test_wait_for_counts_ignored_exceptions_as_not_yet_and_reports_the_last() -> None:
    def probe() -> bool:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(WaitTimeout) as info:
        wait_for(probe, timeout=0.05, what="the server", interval=0.01, ignore=(OSError,))
    assert isinstance(info.value.last, ConnectionRefusedError)
    assert "nobody listens" in str(info.value)


def test_wait_for_lets_other_exceptions_through() -> None:
    def probe() -> bool:
        raise KeyError("broken probe")

    with pytest.raises(KeyError):
        wait_for(probe, timeout=5, what="x", interval=0.01, ignore=(OSError,))


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port_is_free(p) for p in ports)
    assert port_is_free(free_port())


def test_a_bound_port_is_not_free() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])
