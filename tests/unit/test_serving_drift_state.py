"""model_state from the drift monitor's status: stale only on confirmed drift against the
answering version's reference; unknown when the monitor cannot tell or cannot be reached."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from loopline.serving.drift_state import OK, STALE, UNKNOWN, DriftState, state_of


def status(confirmed: Any = True, version: Any = "3") -> dict[str, Any]:
    return {"reference": {"version": version, "rows": 10}, "driftConfirmed": confirmed}


@pytest.mark.parametrize(
    ("doc", "version", "want"),
    [
        (status(True, "3"), "3", STALE),
        (status(False, "3"), "3", OK),
        (status(True, "3"), "4", OK),  # a canary trained after the drift is not stale
        (status(True, 3), "3", STALE),
        ({"reference": None, "driftConfirmed": True}, "3", UNKNOWN),
        ({"driftConfirmed": True}, "3", UNKNOWN),
        (status("yes", "3"), "3", UNKNOWN),
        ([1, 2], "3", UNKNOWN),
        (None, "3", UNKNOWN),
    ],
)
def test_state_of(doc: Any, version: str, want: str) -> None:
    assert state_of(doc, version) == want


def test_an_answer_older_than_three_polls_is_unknown() -> None:
    now = [100.0]
    drift = DriftState("http://monitor", poll_s=2.0, timeout_s=1.0, clock=lambda: now[0])
    assert drift.state("3") == UNKNOWN  # nothing read yet
    drift.update(status(True, "3"))
    now[0] += 6.0
    assert drift.state("3") == STALE
    now[0] += 0.5
    assert drift.state("3") == UNKNOWN


async def test_an_unreachable_monitor_keeps_the_last_answer_aging() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/status"
        return httpx.Response(200, json=status(True, "3"))

    drift = DriftState("http://monitor/", poll_s=1.0, timeout_s=1.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        assert await drift.poll_once(client)
    assert drift.state("3") == STALE
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        assert not await drift.poll_once(client)
    assert drift.state("3") == STALE  # still within three polls
    bad = httpx.MockTransport(lambda r: httpx.Response(503, text="starting"))
    async with httpx.AsyncClient(transport=bad) as client:
        assert not await drift.poll_once(client)


def test_no_monitor_no_polling() -> None:
    drift = DriftState("", poll_s=2.0, timeout_s=1.0)
    drift.start()  # no running loop needed: nothing to poll
    assert drift.state("1") == UNKNOWN
