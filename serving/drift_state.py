"""Whether the drift monitor finds the serving model stale: the per-row `model_state` output.

Every replica of a model server polls the Model's one drift monitor (`GET /v1/status`) on a
background task, every `drift_poll_s`, and requests read the last answer from memory: a
request never waits for the monitor, and all replicas agree within one poll interval because
they read the same monitor. The state of a version is

- `stale`: the monitor reports confirmed drift (`driftConfirmed`) against a reference that is
  this version's training data (`reference.version`); a canary trained on the new operating
  point is therefore not stale while the champion is;
- `ok`: the monitor answered and reports no confirmed drift against this version (none at
  all, or drift against another version's reference);
- `unknown`: no monitor configured, no answer yet, no reference loaded, or the last good
  answer is older than `STALE_AFTER_POLLS` polls (the monitor is down or unreachable). The
  server keeps answering; only the label says it cannot tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

log = logging.getLogger(__name__)

OK = "ok"
STALE = "stale"
UNKNOWN = "unknown"
STATES = (OK, STALE, UNKNOWN)
STATUS_PATH = "/v1/status"  # the monitor's (loopline.monitoring.app.STATUS_PATH)
STALE_AFTER_POLLS = 3


def state_of(status: Any, version: str) -> str:
    """The state of `version` from a monitor's `/v1/status` body (a JSON object). Read
    leniently, only the two fields it needs, so a newer monitor with more fields still
    works; anything unreadable is `unknown`."""
    if not isinstance(status, dict):
        return UNKNOWN
    reference = status.get("reference")
    if not isinstance(reference, dict) or reference.get("version") is None:
        return UNKNOWN
    confirmed = status.get("driftConfirmed")
    if not isinstance(confirmed, bool):
        return UNKNOWN
    if confirmed and str(reference["version"]) == version:
        return STALE
    return OK


class DriftState:
    """The last monitor status this replica read, and a poller that keeps it fresh."""

    def __init__(
        self,
        monitor_url: str,
        *,
        poll_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = monitor_url.rstrip("/") + STATUS_PATH if monitor_url else ""
        self.poll_s = poll_s
        self._timeout = timeout_s
        self._clock = clock
        self._status: Any = None
        self._read_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def update(self, status: Any) -> None:
        """Record a status read now (the poller's; tests call it directly)."""
        self._status = status
        self._read_at = self._clock()

    def state(self, version: str) -> str:
        if self._read_at is None:
            return UNKNOWN
        if self._clock() - self._read_at > STALE_AFTER_POLLS * self.poll_s:
            return UNKNOWN
        return state_of(self._status, version)

    def start(self) -> None:
        """Start polling on the running event loop (the server's, at model load)."""
        if self.url and self.poll_s > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def poll_once(self, client: httpx.AsyncClient) -> bool:
        """One read of the monitor's status; False (and the old answer kept, aging) when
        the monitor could not be read."""
        try:
            response = await client.get(self.url)
            response.raise_for_status()
            self.update(response.json())
            return True
        except (httpx.HTTPError, ValueError) as exc:
            log.debug("reading drift state from %s failed: %s", self.url, exc)
            return False

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self._timeout, trust_env=False) as client:
            failing = False
            while True:
                ok = await self.poll_once(client)
                if not ok and not failing:
                    log.warning("drift monitor %s unreachable: model_state is unknown", self.url)
                failing = not ok
                await asyncio.sleep(self.poll_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
