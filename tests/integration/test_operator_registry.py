"""Who moves the `champion` alias, and how each rollout ended, against a real MLflow
registry (SQLite).

A run the operator starts registers and gates its version but leaves `champion` alone; the
operator's registry backend points it at the version serving all traffic, reads it on every
reconcile (so a hand-moved alias is put back at once, saying where it pointed), and reports a registry it cannot use as
BackendUnavailable (Degraded, retried), never as a crash.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient

from loopline.operators.backends.registry import RegistryBackend
from loopline.operators.builders.champion import ChampionCheck
from loopline.operators.builders.model import ChampionAlias, RolloutMark
from loopline.operators.errors import BackendUnavailable
from loopline.tracking.gate import GateDecision
from loopline.tracking.lineage import GATE_DECISION, ROLLOUT_OUTCOME, ROLLOUT_REASON
from loopline.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    apply_decision,
    register_challenger,
    version_by_alias,
)
from loopline.types.status import RolloutOutcome

NAME = "plant.drill-ae"


@pytest.fixture
def registry(tmp_path: Path) -> tuple[MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment = client.create_experiment("gate")
    for _ in range(3):
        run = client.create_run(experiment)
        register_challenger(
            client,
            NAME,
            model_uri="file:///dev/null",
            run_id=run.info.run_id,
            model_id=None,
            tags={},
        )
    return client, uri


def _champion(client: MlflowClient) -> str | None:
    found = version_by_alias(client, NAME, CHAMPION)
    return None if found is None else str(found.version)


def _promote(client: MlflowClient, version: str, *, move_champion: bool) -> None:
    run_id = client.get_model_version(NAME, version).run_id
    assert run_id
    decision = GateDecision(
        passed=True,
        reason="f1 0.9 >= champion 0.8 + margin 0",
        metric="f1",
        challenger_value=0.9,
        champion_value=0.8,
    )
    apply_decision(client, NAME, version, run_id, decision, "1", move_champion=move_champion)


def test_a_run_the_operator_started_records_the_gate_but_leaves_the_alias(
    registry: tuple[MlflowClient, str],
) -> None:
    client, _ = registry
    client.set_registered_model_alias(NAME, CHAMPION, "1")
    _promote(client, "2", move_champion=False)
    assert _champion(client) == "1"
    assert client.get_model_version(NAME, "2").tags[GATE_DECISION] == "passed"
    assert str(client.get_model_version_by_alias(NAME, CHALLENGER).version) == "3"
    _promote(client, "3", move_champion=True)  # a run started by hand moves it itself
    assert _champion(client) == "3"


def test_the_backend_points_the_alias_and_puts_back_a_hand_moved_one_at_once(
    registry: tuple[MlflowClient, str],
) -> None:
    client, uri = registry
    backend = RegistryBackend(uri)
    assert backend.ensure_champion(ChampionAlias(NAME, "1")) == ChampionCheck(NAME, "1", None, True)
    assert _champion(client) == "1"
    assert not backend.ensure_champion(ChampionAlias(NAME, "1")).moved  # no change
    # The canary (v2) was rolled back: status.champion is still v1, and so is the alias.
    client.set_registered_model_alias(NAME, CHAMPION, "2")  # by hand, behind its back
    assert backend.ensure_champion(ChampionAlias(NAME, "1")) == ChampionCheck(NAME, "1", "2", True)
    assert _champion(client) == "1"
    # A promotion is a change: asked at once.
    assert backend.ensure_champion(ChampionAlias(NAME, "3")).found == "1"
    assert _champion(client) == "3"


def test_a_version_the_registry_does_not_have_is_unavailable_with_its_name(
    registry: tuple[MlflowClient, str],
) -> None:
    client, uri = registry
    backend = RegistryBackend(uri)
    with pytest.raises(BackendUnavailable, match=r"plant\.drill-ae@champion at version 9"):
        backend.ensure_champion(ChampionAlias(NAME, "9"))
    assert _champion(client) is None
    assert backend.ensure_champion(ChampionAlias(NAME, "2")).moved  # and it recovers


def test_an_unreachable_registry_is_unavailable_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    backend = RegistryBackend("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(BackendUnavailable, match="MLflow: cannot point"):
        backend.ensure_champion(ChampionAlias(NAME, "1"))


def test_a_deleted_model_loses_its_aliases_but_keeps_its_versions(
    registry: tuple[MlflowClient, str],
) -> None:
    client, uri = registry
    backend = RegistryBackend(uri)
    backend.ensure_champion(ChampionAlias(NAME, "2"))
    backend.release(NAME)
    assert version_by_alias(client, NAME, CHAMPION) is None
    assert version_by_alias(client, NAME, CHALLENGER) is None
    versions = client.search_model_versions(f"name='{NAME}'")
    assert sorted(str(v.version) for v in versions) == ["1", "2", "3"]
    backend.release(NAME)  # again (a retried cleanup): nothing left to remove, no error
    backend.release("plant.never-registered")
    # Created again, the Model's first version becomes champion as if it were the first.
    assert backend.ensure_champion(ChampionAlias(NAME, "3")).found is None


def test_each_version_is_tagged_once_with_how_its_rollout_ended(
    registry: tuple[MlflowClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, uri = registry
    backend = RegistryBackend(uri)
    _promote(client, "2", move_champion=False)  # the gate passed...
    marks = [
        RolloutMark(NAME, "2", RolloutOutcome.ROLLED_BACK, "latency_p95_seconds 0.002 > 0.0001"),
        RolloutMark(NAME, "1", RolloutOutcome.PROMOTED, "first version"),
        RolloutMark(NAME, "7", RolloutOutcome.SUPERSEDED, "replaced by version 8"),  # deleted
    ]
    assert backend.mark_rollouts(marks) == 2
    v2 = client.get_model_version(NAME, "2").tags
    assert v2[GATE_DECISION] == "passed"  # ...and its canary was rolled back:
    assert v2[ROLLOUT_OUTCOME] == "rolled_back"
    assert v2[ROLLOUT_REASON] == "latency_p95_seconds 0.002 > 0.0001"
    assert client.get_model_version(NAME, "1").tags[ROLLOUT_OUTCOME] == "promoted"
    assert ROLLOUT_OUTCOME not in client.get_model_version(NAME, "3").tags

    # Every reconcile passes the same marks; the registry is not asked again.
    def unreachable(*args: object, **kwargs: object) -> None:
        raise AssertionError("asked the registry again")

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", unreachable)
    assert backend.mark_rollouts(marks) == 0
    monkeypatch.undo()
    # A new operator process tags again (idempotent), and a registry it cannot reach is
    # Degraded and retried, not a crash.
    assert RegistryBackend(uri).mark_rollouts(marks[:1]) == 1
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(BackendUnavailable, match=r"cannot tag plant\.drill-ae version 2"):
        RegistryBackend("http://127.0.0.1:9").mark_rollouts(marks[:1])
