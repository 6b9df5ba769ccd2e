"""Watching local processes: a health probe each, restarts with backoff, errors logged.

The rules for one process (what counts as alive, how it is started and stopped) are in
`loopline.supervisor`; this is the loop on top, for owners that keep processes running
(the local model servers): a process that dies is started again after 1 s, 2 s, 4 s ... up
to a ceiling, and one whose probe fails after it had passed is reported, not restarted, so
its owner can try something gentler first (a model reload).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from loopline.supervisor import ProcessRecord, alive, exit_message, log_tail, stop

log = logging.getLogger(__name__)


class State(StrEnum):
    """Where a watched process is, as its owner reports it."""

    STARTING = "starting"  # started (or restarted), not yet healthy
    READY = "ready"  # alive and the probe passes
    UNREADY = "unready"  # alive, the probe failed after it had passed: reported, not repaired
    RESTARTING = "restarting"  # died; started again after the backoff
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass
class Watched:
    """One supervised process. `spawn` starts a new incarnation (same ports, same files) and
    returns its record; `probe` says why it is not healthy ("" when it is)."""

    name: str
    spawn: Callable[[], ProcessRecord]
    probe: Callable[[], str] | None = None
    record: ProcessRecord | None = None
    state: State = State.STARTING
    restarts: int = 0
    last_error: str = ""
    backoff_s: float = 1.0
    next_restart: float = 0.0
    started_at: float = 0.0  # time.monotonic() of the current incarnation's start
    adopted: bool = False  # the current incarnation was started by a previous owner
    stopping: bool = False

    def alive(self) -> bool:
        return self.record is not None and alive(self.record)


class Supervisor:
    """Watches processes: probes the live ones, restarts the dead ones with backoff.

    One step per process per `poll_s` on a daemon thread (`run`), or by hand with `check`.
    `lock` is shared with the owner, so a restart never races the owner's own stop or
    update; probes run outside it (they may take a network round trip). An error while
    watching one process is logged with its name and does not stop the others."""

    def __init__(
        self,
        *,
        poll_s: float = 0.5,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        lock: threading.RLock | None = None,
        name: str = "loopline-supervisor",
    ) -> None:
        self.poll_s = poll_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.lock = lock or threading.RLock()
        self._watched: dict[str, Watched] = {}
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def run(self) -> Supervisor:
        self._thread.start()
        return self

    def watch(self, watched: Watched) -> Watched:
        """Supervise `watched`, starting it unless it already has a record (then it was
        adopted: started by a previous owner)."""
        with self.lock:
            watched.backoff_s = self.initial_backoff_s
            watched.adopted = watched.record is not None
            if watched.record is None:
                self._spawn(watched)
                watched.state = State.STARTING
            self._watched[watched.name] = watched
        return watched

    def get(self, name: str) -> Watched | None:
        with self.lock:
            return self._watched.get(name)

    def restart(self, watched: Watched, grace: float = 10.0, *, reason: str = "") -> None:
        """Stop the current incarnation (if any) and start a new one now."""
        with self.lock:
            if watched.record is not None:
                stop(watched.record, grace)
            self._spawn(watched)
            watched.state = State.STARTING
            if reason:
                watched.restarts += 1
                watched.last_error = reason

    def release(self, name: str, grace: float = 10.0) -> Watched | None:
        """Stop watching `name` and stop its process."""
        with self.lock:
            watched = self._watched.pop(name, None)
            if watched is None:
                return None
            watched.stopping = True
        if watched.record is not None:
            stop(watched.record, grace)
        watched.state = State.STOPPED
        return watched

    def _spawn(self, watched: Watched) -> None:
        watched.record = watched.spawn()
        watched.started_at = time.monotonic()
        watched.adopted = False

    def mark_ready(self, watched: Watched) -> None:
        with self.lock:
            watched.state = State.READY
            watched.backoff_s = self.initial_backoff_s

    def halt(self) -> None:
        """Stop watching, leave the processes running (what a killed owner does to them)."""
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def close(self, grace: float = 10.0) -> None:
        """Stop watching and stop every process."""
        self.halt()
        with self.lock:
            names = list(self._watched)
        for name in names:
            self.release(name, grace)

    def _run(self) -> None:
        while not self._halt.wait(self.poll_s):
            with self.lock:
                watched = [w for w in self._watched.values() if not w.stopping]
            for one in watched:
                try:
                    self.check(one)
                except Exception:  # the loop must go on for the others; say which and why
                    log.exception("supervising %s failed", one.name)

    def check(self, watched: Watched) -> None:
        """One step: probe a live process, or schedule and perform the restart of a dead one."""
        if watched.alive():
            self._probe(watched)
            return
        now = time.monotonic()
        with self.lock:
            if watched.stopping:
                return
            if watched.state != State.RESTARTING:
                assert watched.record is not None  # alive() was False only for a dead one
                watched.last_error = exit_message(watched.record, adopted=watched.adopted)
                watched.state = State.RESTARTING
                watched.next_restart = now + watched.backoff_s
                log.warning(
                    "%s %s; restarting in %.1f s; last lines of %s:\n%s",
                    watched.name,
                    watched.last_error,
                    watched.backoff_s,
                    watched.record.log,
                    log_tail(watched.record.log, 10),
                )
                return
            if now >= watched.next_restart:
                watched.restarts += 1
                watched.backoff_s = min(watched.backoff_s * 2, self.max_backoff_s)
                # Scheduled before the attempt: a spawn that raises waits its backoff too.
                watched.next_restart = now + watched.backoff_s
                self._spawn(watched)
                # A new incarnation: its death (even before any check saw it alive) is a
                # new failure, logged and given the (now longer) backoff.
                watched.state = State.STARTING

    def _probe(self, watched: Watched) -> None:
        if watched.probe is None:
            # Alive is all there is to know; but a process that crashes a moment after it
            # starts is alive for that moment, so the backoff resets only once it has run
            # for as long as the longest backoff.
            with self.lock:
                if watched.state in (State.STARTING, State.RESTARTING):
                    watched.state = State.READY
                elif time.monotonic() - watched.started_at >= self.max_backoff_s:
                    watched.backoff_s = self.initial_backoff_s
            return
        if watched.state in (State.STARTING, State.RESTARTING, State.UNREADY):
            if not watched.probe():
                if watched.state == State.UNREADY:
                    log.info("%s: healthy again", watched.name)
                    watched.last_error = ""
                self.mark_ready(watched)
        elif watched.state == State.READY:
            why = watched.probe()
            if why:
                # Reported, not repaired: the owner decides (a reload may be enough).
                with self.lock:
                    watched.state = State.UNREADY
                    watched.last_error = why
                log.warning("%s: %s", watched.name, why)
