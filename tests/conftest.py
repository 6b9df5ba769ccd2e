"""Tiers by folder: every test gets the marker of the folder it lives in; no test leaves an
event loop open for a later one to be blamed for."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from loopline import quiet

quiet.apply()

# Fixture plugins, one module per subsystem (tests/fixtures/*.py).
pytest_plugins: list[str] = [
    "tests.fixtures.cluster",
    "tests.fixtures.serving",
    "tests.fixtures.training",
    "tests.fixtures.data",
    "tests.fixtures.operator",
    "tests.fixtures.monitoring",
]

_TIERS = ("unit", "integration", "e2e", "security", "realnode")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(autouse=True)
def _no_event_loop_left_open() -> Iterator[None]:
    """Close the loop a test leaves as the thread's current one.

    pytest-asyncio (1.0) saves "the current loop" around each async test with
    `asyncio.get_event_loop()`, which makes a new loop when none is set, and puts that loop
    back afterwards without closing it (pytest-asyncio issue 724, fixed upstream after the
    version pinned here). A later `asyncio.run` replaces it, and the garbage collector then
    reports `ResourceWarning: unclosed event loop` in whichever test happens to run: a failure
    that moved from test to test. No test keeps a loop across tests (every async fixture is
    function-scoped), so a loop still current and idle after a test is closed here."""
    yield
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = policy.get_event_loop()
        except RuntimeError:  # not the main thread, or a policy that refuses
            return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    policy.set_event_loop(None)
