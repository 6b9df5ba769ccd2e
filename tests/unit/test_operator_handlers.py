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


def test_kopf_stores_no_last_handled_configuration() -> None:
    """Every event of a live Model then reads as a creation with no creation handler: kopf has
    nothing to write back (a write of the whole object after every change, before)."""
    import kopf

    from loopline.operators.handlers import NoDiffBase

    body = kopf.Body({"metadata": {"name": "m", "annotations": {"a": "b"}}, "spec": {"x": 1}})
    patch = kopf.Patch()
    storage = NoDiffBase()
    assert storage.fetch(body=body) is None
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch


def test_routine_handler_successes_are_not_logged_but_everything_else_is() -> None:
    import logging

    from loopline.operators.handlers import RoutineSuccess

    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    keep = RoutineSuccess().filter
    assert not keep(record(logging.INFO, "Handler 'model_event' succeeded."))
    assert not keep(record(logging.INFO, "Timer 'pipeline_timer' succeeded."))
    assert keep(record(logging.INFO, "Handler 'model_delete' succeeded."))
    assert keep(record(logging.ERROR, "Handler 'model_event' failed with an exception."))
