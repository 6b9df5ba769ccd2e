"""The operator's kopf registry is built when the operator starts, not when the module loads."""

from __future__ import annotations

import pytest

from loopline.operators.handlers import build_registry
from loopline.operators.settings import OperatorSettings


def _timer_intervals(settings: OperatorSettings | None = None) -> dict[str, float | None]:
    registry = build_registry(settings)
    # kopf has no public listing of a registry's handlers; the spawning registry holds timers.
    handlers = registry._spawning.get_all_handlers()
    return {str(h.id): h.interval for h in handlers}  # type: ignore[attr-defined]


def test_intervals_are_read_when_the_registry_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_OPERATOR_RECONCILE_INTERVAL", "7")
    assert set(_timer_intervals().values()) == {7.0}
    monkeypatch.setenv("LOOPLINE_OPERATOR_RECONCILE_INTERVAL", "3")
    assert set(_timer_intervals().values()) == {3.0}


def test_every_handler_is_registered_once_per_registry() -> None:
    intervals = _timer_intervals(OperatorSettings(reconcile_interval=5))
    assert sorted(intervals) == ["model_timer", "pipeline_timer"]
    first, second = build_registry(), build_registry()
    assert first is not second
    assert len(first._activities.get_all_handlers()) == 3  # login, startup, cleanup
