"""Waiting for a condition, in one place.

Every component (cluster, operator backends, demo, tests) polls something until it holds:
a port that answers, a status that flips, a file that appears. One helper keeps the rule the
same everywhere: poll at an interval, return what the probe found, and on timeout fail with
what was seen last, so a timeout says *why* instead of only *that*.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The condition did not hold in time; `last` is what the probe returned (or raised) last."""

    def __init__(self, what: str, timeout: float, last: object) -> None:
        self.what = what
        self.timeout = timeout
        self.last = last
        super().__init__(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {last!r}")


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `probe` until it returns something truthy and return that.

    Exceptions listed in `ignore` count as "not yet" (e.g. OSError while a server binds);
    any other exception propagates at once, because a probe that breaks is not a probe that
    waits. On timeout WaitTimeout carries the last value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except ignore as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout, last)
        time.sleep(interval)
