"""Tiers by folder: every test gets the marker of the folder it lives in."""

from __future__ import annotations

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
