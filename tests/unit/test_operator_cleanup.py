"""Deleting a Model while a reconcile of it is under way: the cleanup waits for that reconcile,
so what the reconcile (re)applies is removed after it, not before it and then left behind.

No API server: the backends are recorders and the history ledger is not written.
"""

from __future__ import annotations

import threading
from typing import Any

import kubernetes.client as k8s

from loopline.operators.backends.factory import Backends
from loopline.operators.builders.runs import RunContext
from loopline.operators.runtime import Operator
from loopline.operators.settings import OperatorSettings

BODY = {"metadata": {"namespace": "plant", "name": "drill-ae", "uid": "u1"}}


class Recorder:
    """Pipelines, serving and monitoring in one: every call appended to `calls`."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def runs_of(self, namespace: str, name: str) -> list[str]:
        return ["run-1"]

    def cancel(self, run_id: str) -> None:
        self.calls.append(f"cancel {run_id}")

    def delete(self, namespace: str, name: str) -> None:
        self.calls.append(f"delete {namespace}/{name}")

    def forget(self, namespace: str, name: str) -> None:
        self.calls.append(f"forget {namespace}/{name}")


def _operator(calls: list[str]) -> Operator:
    recorder: Any = Recorder(calls)
    op = Operator(
        k8s.ApiClient(),
        Backends(pipelines=recorder, serving=recorder, monitoring=recorder),
        OperatorSettings(),
        RunContext(mlflow_tracking_uri="sqlite:///unused.db", feature_repo="unused"),
    )
    op.record = lambda obj, decisions: calls.append("recorded")  # type: ignore[method-assign]
    return op


def test_cleanup_waits_for_the_reconcile_under_way_and_removes_what_it_applied() -> None:
    calls: list[str] = []
    op = _operator(calls)
    reconciling, release = threading.Event(), threading.Event()

    def reconcile() -> None:
        with op._locked("models", "plant", "drill-ae"):
            reconciling.set()
            release.wait(5)
            calls.append("reconcile applied the monitor")

    reconciler = threading.Thread(target=reconcile)
    reconciler.start()
    assert reconciling.wait(5)
    cleaner = threading.Thread(target=op.cleanup_model, args=(BODY, 0))
    cleaner.start()
    cleaner.join(0.3)
    assert cleaner.is_alive()  # held back by the reconcile
    assert calls == []
    release.set()
    reconciler.join(5)
    cleaner.join(5)
    assert calls == [
        "reconcile applied the monitor",
        "cancel run-1",
        "delete plant/drill-ae",  # the servers
        "delete plant/drill-ae",  # the monitor
        "forget plant/drill-ae",
        "recorded",
    ]


def test_cleanup_of_an_idle_model_does_not_wait() -> None:
    calls: list[str] = []
    assert _operator(calls).cleanup_model(BODY, 0) is True
    assert calls[-1] == "recorded"
