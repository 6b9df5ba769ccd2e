"""The operator's event recorder: Events are posted beside the reconcile, in order, identical
waiting ones become one with a count, the queue is bounded, and closing posts what waits.

No API server: `post` is a function that records (or blocks, or refuses) what it is given.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes.client.exceptions import ApiException

from loopline.operators.builders.model_plan import Event
from loopline.operators.events import EventRecorder

MODEL = {"metadata": {"namespace": "plant", "name": "drill-ae", "uid": "u1"}}
OTHER = {"metadata": {"namespace": "plant", "name": "press-ae", "uid": "u2"}}


class Gate:
    """A post that waits until opened, so the test controls what is still queued."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.posted: list[dict[str, Any]] = []
        self.first = threading.Event()

    def __call__(self, namespace: str, body: dict[str, Any]) -> None:
        self.first.set()
        assert self.open.wait(5)
        self.posted.append(body)


def test_events_are_posted_in_order_and_closing_posts_what_waits() -> None:
    gate = Gate()
    recorder = EventRecorder(gate)
    recorder.record(MODEL, Event("Normal", "TrainingStarted", "run r1 started"))
    assert gate.first.wait(5)  # the first is being posted; the rest wait behind it
    for reason in ("Training", "Validating", "Serving"):
        recorder.record(MODEL, Event("Normal", reason, reason.lower()))
    gate.open.set()
    recorder.close()
    assert [b["reason"] for b in gate.posted] == [
        "TrainingStarted",
        "Training",
        "Validating",
        "Serving",
    ]
    assert gate.posted[0]["involvedObject"]["uid"] == "u1"
    assert recorder.posted == 4


def test_identical_waiting_events_become_one_with_a_count() -> None:
    gate = Gate()
    recorder = EventRecorder(gate)
    recorder.record(MODEL, Event("Normal", "First", "x"))
    assert gate.first.wait(5)
    for _ in range(5):
        recorder.record(MODEL, Event("Warning", "BackendUnavailable", "mlflow down"))
    recorder.record(OTHER, Event("Warning", "BackendUnavailable", "mlflow down"))
    recorder.record(MODEL, Event("Warning", "BackendUnavailable", "mlflow is back? no"))
    gate.open.set()
    recorder.close()
    got = [(b["involvedObject"]["name"], b["message"], b["count"]) for b in gate.posted[1:]]
    assert got == [
        ("drill-ae", "mlflow down", 5),
        ("press-ae", "mlflow down", 1),
        ("drill-ae", "mlflow is back? no", 1),
    ]
    aggregated = gate.posted[1]
    assert aggregated["lastTimestamp"] >= aggregated["firstTimestamp"]


def test_a_full_queue_drops_new_events_and_counts_them() -> None:
    gate = Gate()
    recorder = EventRecorder(gate, max_waiting=2)
    recorder.record(MODEL, Event("Normal", "Posting", "now"))
    assert gate.first.wait(5)
    for i in range(5):
        recorder.record(MODEL, Event("Normal", "Step", str(i)))
    gate.open.set()
    recorder.close()
    assert [b["message"] for b in gate.posted] == ["now", "0", "1"]
    assert recorder.dropped == 3


def test_a_refused_post_is_logged_and_the_rest_go_on() -> None:
    posted: list[str] = []

    def post(namespace: str, body: dict[str, Any]) -> None:
        if body["reason"] == "Refused":
            raise ApiException(status=403, reason="Forbidden")
        if body["reason"] == "Unanswered":
            raise RuntimeError("max retries exceeded")  # not an ApiException, not an OSError
        posted.append(body["reason"])

    recorder = EventRecorder(post)
    recorder.record(MODEL, Event("Normal", "Refused", "no rights"))
    recorder.record(MODEL, Event("Normal", "Unanswered", "no server"))
    recorder.record(MODEL, Event("Normal", "Kept", "posted"))
    assert recorder.flush()
    assert posted == ["Kept"]
    recorder.close()
    recorder.record(MODEL, Event("Normal", "Late", "after close"))  # not posted, not raised
    assert posted == ["Kept"]
