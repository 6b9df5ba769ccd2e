"""`loopline history` and `loopline approve|reject` without a cluster: times, references,
the approval object, and the text of an `--at` answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest

from loopline.cli.approve import build_approval
from loopline.cli.history import parse_time, render_at, split_ref
from loopline.operators.builders.history_query import serving_at
from loopline.types.history import ApprovalDecision, Decision, ModelApprovalSpec

NOW = datetime(2026, 3, 10, 3, 10, tzinfo=UTC)


def test_times_are_rfc3339_or_durations_ago() -> None:
    assert parse_time("2026-03-10T03:10:00Z") == NOW
    assert parse_time("2026-03-10T03:10:00") == NOW  # no zone: UTC
    assert parse_time("2h", now=NOW) == NOW - timedelta(hours=2)
    assert parse_time("7d", now=NOW) == NOW - timedelta(days=7)
    with pytest.raises(click.BadParameter, match="RFC 3339"):
        parse_time("last tuesday")


def test_a_model_is_named_namespace_slash_name() -> None:
    assert split_ref("plant-a/drill-ae") == ("plant-a", "drill-ae")
    for bad in ("drill-ae", "/drill-ae", "plant-a/"):
        with pytest.raises(click.BadParameter, match="NAMESPACE/NAME"):
            split_ref(bad)


def test_the_approval_names_the_user_and_validates_as_the_crd_does() -> None:
    body = build_approval("drill-ae", "7", ApprovalDecision.REJECTED, "bad week", "alice")
    spec = ModelApprovalSpec.model_validate(body["spec"])
    assert (spec.approver, spec.decision, spec.version) == ("alice", "Rejected", "7")
    assert body["metadata"]["labels"] == {"loopline.dev/model": "drill-ae"}
    assert body["metadata"]["name"].startswith("drill-ae-v7-rejected-")
    other = build_approval("drill-ae", "7", ApprovalDecision.REJECTED, "bad week", "alice")
    assert other["metadata"]["name"] != body["metadata"]["name"]


def _d(minutes: int, kind: str, version: str, weight: int | None = None) -> Decision:
    return Decision.model_validate(
        {
            "at": NOW + timedelta(minutes=minutes),
            "kind": kind,
            "actor": {"kind": "user" if kind == "Approved" else "operator", "name": "alice"},
            "version": version,
            "weight": weight,
        }
    )


def test_at_answer_names_champion_canary_and_why() -> None:
    ledger = [
        _d(0, "Promoted", "6", 100),
        _d(5, "GateDecided", "7"),
        _d(6, "Approved", "7"),
        _d(7, "CanaryStep", "7", 20),
    ]
    text = render_at(serving_at(ledger, NOW + timedelta(minutes=8)))
    assert "version 6 was champion, version 7 a canary at 20%" in text
    assert "Promoted" in text
    empty = render_at(serving_at(ledger, NOW - timedelta(minutes=1)))
    assert "no version was champion yet" in empty
