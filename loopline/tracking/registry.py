"""The model registry: versions, the `champion` and `challenger` aliases, the gate's effects."""

from __future__ import annotations

import math

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from loopline.tracking.gate import GateDecision
from loopline.tracking.lineage import (
    GATE_CHALLENGER,
    GATE_CHAMPION,
    GATE_CHAMPION_VERSION,
    GATE_DECISION,
    GATE_METRIC,
    GATE_REASON,
    NONE,
    ROLLOUT_OUTCOME,
    ROLLOUT_REASON,
)
from loopline.types.common import CHAMPION_ALIAS

CHAMPION = CHAMPION_ALIAS
CHALLENGER = "challenger"


def alias_uri(name: str, alias: str = CHAMPION) -> str:
    return f"models:/{name}@{alias}"


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None if the model or the alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_challenger(
    client: MlflowClient,
    name: str,
    *,
    model_uri: str,
    run_id: str,
    model_id: str | None,
    tags: dict[str, str],
) -> ModelVersion:
    """Register a new version (creating the registered model once) and alias it `challenger`."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description="Managed by Loopline.")
    version = client.create_model_version(
        name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id
    )
    client.set_registered_model_alias(name, CHALLENGER, str(version.version))
    return version


def _num(value: float | None) -> str:
    return NONE if value is None or math.isnan(value) else repr(float(value))


def gate_tags(decision: GateDecision, champion_version: str | None) -> dict[str, str]:
    return {
        GATE_DECISION: decision.label,
        GATE_REASON: decision.reason,
        GATE_METRIC: decision.metric,
        GATE_CHALLENGER: _num(decision.challenger_value),
        GATE_CHAMPION: _num(decision.champion_value),
        GATE_CHAMPION_VERSION: champion_version or NONE,
    }


def apply_decision(
    client: MlflowClient,
    name: str,
    version: str,
    run_id: str,
    decision: GateDecision,
    champion_version: str | None,
    *,
    move_champion: bool = True,
) -> None:
    """Record the decision on the version and the run; move `champion` if it passed and this
    run owns the alias (`TrainingRunSpec.move_champion`; an operator's rollout otherwise)."""
    for key, value in gate_tags(decision, champion_version).items():
        client.set_model_version_tag(name, version, key, value)
        client.set_tag(run_id, key, value)
    if decision.passed and move_champion:
        client.set_registered_model_alias(name, CHAMPION, version)


def point_champion(client: MlflowClient, name: str, version: str) -> bool:
    """Point `champion` at `version` unless it already does; True if it moved."""
    current = version_by_alias(client, name, CHAMPION)
    if current is not None and str(current.version) == version:
        return False
    client.set_registered_model_alias(name, CHAMPION, version)
    return True


def mark_rollout(client: MlflowClient, name: str, version: str, outcome: str, reason: str) -> bool:
    """Tag how the version's rollout ended; False when the version no longer exists (deleted
    by hand: there is nothing left to mark)."""
    try:
        client.set_model_version_tag(name, version, ROLLOUT_OUTCOME, outcome)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    client.set_model_version_tag(name, version, ROLLOUT_REASON, reason)
    return True
