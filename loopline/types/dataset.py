"""The roles of a registered data set's columns, as training records them for serving.

A data set is registered once (`loopline data register`) with the names of its entity,
timestamp, features, core features and label, and what the label means. Training, evaluation,
the monitor and the model server read those names from here instead of assuming the columns
of the generated factory data, so a user's `unit_id` / `recorded_at` / `is_anomaly` data set
trains and serves like the generated one.

Kept free of pandas and of the data package: the model server reads a bundle's roles with
numpy and pydantic alone.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loopline.types.common import Task

# Key of the roles in a model bundle's `metadata` (bundle.json) and of the MLflow model's
# metadata (the MLmodel file's `metadata:` block).
ROLES_KEY = "roles"
MLFLOW_METADATA_KEY = "loopline_roles"


class LabelKind(StrEnum):
    """What a label column means."""

    ANOMALY_FLAG = "anomaly-flag"  # 0/1 or boolean: 1 (true) marks an anomalous row
    CLASS = "class"  # a class name (or code) per row

    @classmethod
    def for_task(cls, task: Task) -> LabelKind:
        """The label a task trains on: anomaly detection a flag, classification a class."""
        return cls.ANOMALY_FLAG if task == Task.ANOMALY_DETECTION else cls.CLASS


class DatasetRoles(BaseModel):
    """Which column is what, for one trained model.

    JSON (bundle.json `metadata.roles`, MLmodel `metadata.loopline_roles`):
    `{"entity", "timestamp", "features", "core_features", "label", "label_kind", "classes"}`.
    Unknown keys are ignored so that an older reader reads a newer bundle.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    entity: str = Field(min_length=1, description="The entity (key) column, e.g. a machine id.")
    timestamp: str = Field(min_length=1, description="The event timestamp column.")
    features: list[str] = Field(min_length=1, description="The primary model's inputs, in order.")
    core_features: list[str] = Field(
        default_factory=list, description="The fallback model's inputs, in order."
    )
    label: str = Field(min_length=1, description="The label column the model was trained on.")
    label_kind: LabelKind
    classes: list[str] = Field(
        default_factory=list,
        description="Classification: the class names in the order of the model's outputs.",
    )

    @classmethod
    def from_mlflow_metadata(cls, metadata: dict[str, Any] | None) -> DatasetRoles | None:
        """The roles in an MLflow model's metadata (`mlflow.models.Model.load(...).metadata`
        or `get_model_info(uri).metadata`); None for a model logged without them."""
        doc = (metadata or {}).get(MLFLOW_METADATA_KEY)
        return None if doc is None else cls.model_validate(doc)

    @property
    def not_features(self) -> set[str]:
        """Columns that are never model inputs."""
        return {self.entity, self.timestamp, self.label}
