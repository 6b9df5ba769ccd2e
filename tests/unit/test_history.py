"""The history ledger's pure parts: decisions from a reconcile, their JSON, and `--at`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click
import pytest

from loopline.cli.history import parse_time, split_ref
from loopline.history.ledger import (
    chunk_name,
    decision_key,
    decision_ns,
    label_value,
    parse_entries,
)
from loopline.history.timeline import describe_at, select, serving_at
from loopline.operators.builders.canary import VersionStats
from loopline.operators.builders.decisions import spec_change, spec_manager, stats_evidence
from loopline.types.history import MAX_DECISION_BYTES, Decision, ServingState
from loopline.types.status import ModelStatus

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def _d(minutes: int, kind: str, version: str | None, **serving: object) -> Decision:
    return Decision(
        at=T0 + timedelta(minutes=minutes),
        kind=kind,
        actor="loopline-operator",
        message=kind,
        version=version,
        serving=ServingState.model_validate(serving),
    )


CANARY_STORY = [
    _d(0, "Promoted", "1", champion="1"),
    _d(10, "TrainingSucceeded", "2", champion="1", canary="2", weight=10),
    _d(12, "CanaryStep", "2", champion="1", canary="2", weight=50),
    _d(14, "Promoted", "2", champion="2"),
]


def test_serving_at_before_during_and_after_a_canary() -> None:
    before = serving_at(CANARY_STORY, T0 + timedelta(minutes=5))
    assert before.state == ServingState(champion="1")
    assert before.champion_by is CANARY_STORY[0]
    during = serving_at(CANARY_STORY, T0 + timedelta(minutes=13))
    assert during.state == ServingState(champion="1", canary="2", weight=50)
    assert during.canary_by is CANARY_STORY[2]
    assert "canary 2 taking 50% of traffic" in describe_at(during)[0]
    after = serving_at(CANARY_STORY, T0 + timedelta(hours=1))
    assert after.state == ServingState(champion="2")
    assert after.champion_by is CANARY_STORY[3]
    nothing = serving_at(CANARY_STORY, T0 - timedelta(minutes=1))
    assert nothing.state is None
    assert "nothing was serving" in describe_at(nothing)[0]


def test_select_by_time_and_version() -> None:
    assert select(CANARY_STORY, version="2") == CANARY_STORY[1:]
    assert select(CANARY_STORY, since=T0 + timedelta(minutes=12)) == CANARY_STORY[2:]


def test_a_decision_is_cut_to_its_byte_budget_evidence_first() -> None:
    big = Decision(
        at=T0, kind="CanaryStep", actor="x", message="m" * 5000, evidence={"k": "v" * 5000}
    )
    text = big.to_json()
    assert len(text.encode()) <= MAX_DECISION_BYTES
    doc = json.loads(text)
    assert doc["evidence"] == {"truncated": True}
    assert Decision.model_validate(doc).kind == "CanaryStep"


def test_ledger_keys_sort_by_time_and_unreadable_entries_are_skipped() -> None:
    a, b = CANARY_STORY[0], CANARY_STORY[1]
    entries = {
        decision_key(decision_ns(b), b.to_json()): b.to_json(),
        decision_key(decision_ns(a), a.to_json()): a.to_json(),
    }
    entries["zzz"] = "not json"
    assert [d.kind for d in parse_entries(entries)] == ["Promoted", "TrainingSucceeded"]
    assert chunk_name("drill", 3) == "drill-history-00003"
    assert len(label_value("m" * 100)) <= 63


def test_spec_change_names_the_field_manager_of_spec() -> None:
    managed = [
        {
            "manager": "kubectl-client-side-apply",
            "time": "2026-03-02T03:00:00Z",
            "fieldsV1": {"f:spec": {}},
        },
        {
            "manager": "loopline-operator",
            "time": "2026-03-02T03:05:00Z",
            "fieldsV1": {"f:status": {}},
            "subresource": "status",
        },
        {"manager": "kubectl-edit", "time": "2026-03-02T03:07:00Z", "fieldsV1": {"f:spec": {}}},
    ]
    assert spec_manager(managed) == ("kubectl-edit", "2026-03-02T03:07:00Z")
    meta = {"generation": 3, "uid": "u", "managedFields": managed}
    seen = ModelStatus(observed_generation=2)
    changed = spec_change(meta, seen, T0)
    assert changed is not None
    assert changed.kind == "SpecChanged"
    assert changed.actor == "kubectl-edit"
    assert changed.generation == 3
    assert spec_change(meta, ModelStatus(observed_generation=3), T0) is None
    first = spec_change({"generation": 1, "managedFields": managed[:1]}, ModelStatus(), T0)
    assert first is not None
    assert first.kind == "Created"


def test_canary_readings_become_rates() -> None:
    stats = VersionStats(requests=100, server_errors=2, rows=200, anomaly_rows=20)
    assert stats_evidence(stats) == {
        "requests": 100,
        "rows": 200,
        "errorRate": 0.02,
        "anomalyRate": 0.1,
        "fallbackRate": 0.0,
    }
    assert stats_evidence(None) == {}


def test_cli_arguments_are_checked() -> None:
    assert parse_time("2026-03-02T03:10:00Z") == T0 + timedelta(minutes=10)
    assert parse_time("2026-03-02").tzinfo is not None
    with pytest.raises(click.BadParameter, match="ISO 8601"):
        parse_time("last tuesday")
    assert split_ref("plant/drill") == ("plant", "drill")
    with pytest.raises(click.BadParameter, match="NAMESPACE/NAME"):
        split_ref("drill")


def test_a_run_the_backend_refused_is_recorded_as_refused_not_started() -> None:
    from loopline.operators.builders.decisions import decisions_of
    from loopline.operators.builders.model import reconcile_model
    from tests.unit.test_operator_builders import CTX, _obs

    obs = _obs()
    plan = reconcile_model(obs, CTX)
    assert plan.submit is not None
    assert "TrainingStarted" in [d.kind for d in decisions_of(obs, plan)]

    refused = decisions_of(obs, plan, "job image not allowed by policy")
    assert "TrainingStarted" not in [d.kind for d in refused]
    last = refused[-1]
    assert (last.kind, last.message) == ("BackendRejected", "job image not allowed by policy")
    assert last.generation == 1
