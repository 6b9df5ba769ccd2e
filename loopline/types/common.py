"""Small shared pieces of the resource types."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

GROUP = "loopline.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

RETRAIN_ANNOTATION = f"{GROUP}/retrain"
RETRAIN_REASON_ANNOTATION = f"{GROUP}/retrain-reason"
# The registry alias of the version serving all traffic; the operator owns it.
CHAMPION_ALIAS = "champion"
# Rows since a drift began that a drift-triggered run needs to train on them alone: enough for
# the small networks here and for a held-out fifth that is not a handful of rows.
DRIFT_MIN_ROWS = 1000


class Spec(BaseModel):
    """Base of every spec block: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Task(StrEnum):
    ANOMALY_DETECTION = "anomaly-detection"
    CLASSIFICATION = "classification"


class Trigger(StrEnum):
    """Why a training run started; recorded as an MLflow tag and in the Model's status."""

    MANUAL = "manual"
    SCHEDULE = "schedule"
    DRIFT = "drift"
    SPEC_CHANGE = "spec-change"


def registered_model_name(namespace: str, name: str) -> str:
    """The MLflow registered-model name of a Model resource: one registry entry per resource."""
    return f"{namespace}.{name}"
