"""Training parameters and the validation policy, shared by the Model CRD and training runs.

They live here (not in the operator or the pipeline) because the same object is written by a
user in the Model spec, carried into a training run, and applied by the gates inside it.
"""

from __future__ import annotations

from pydantic import Field

from loopline.types.common import Spec


class TrainingParams(Spec):
    """Knobs of the torch models; defaults suit the factory sensor data of the generator."""

    epochs: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=256, alias="batchSize", ge=8, le=65536)
    learning_rate: float = Field(default=1e-3, alias="learningRate", gt=0, le=1)
    hidden_units: list[int] = Field(
        default_factory=lambda: [32, 16], alias="hiddenUnits", min_length=1, max_length=6
    )
    latent_dim: int = Field(default=6, alias="latentDim", ge=1, le=256)
    threshold_quantile: float = Field(
        default=0.995,
        alias="thresholdQuantile",
        gt=0.5,
        lt=1.0,
        description="Quantile of held-out normal reconstruction error used as the threshold.",
    )
    training_window_days: int = Field(default=14, alias="trainingWindowDays", ge=1, le=3650)
    seed: int = Field(default=0, ge=0)


class DataQualityThresholds(Spec):
    """Minimum score (0..1) per data quality dimension; a training set below any one fails."""

    completeness: float = Field(default=0.95, ge=0, le=1)
    validity: float = Field(default=0.99, ge=0, le=1)
    uniqueness: float = Field(default=1.0, ge=0, le=1)
    consistency: float = Field(default=1.0, ge=0, le=1)
    timeliness: float = Field(default=1.0, ge=0, le=1)
    distribution: float = Field(default=0.8, ge=0, le=1)
    max_staleness_hours: float = Field(default=24.0, alias="maxStalenessHours", gt=0)


class ValidationPolicy(Spec):
    """What a new model version must show before it may replace the champion."""

    data_quality: DataQualityThresholds = Field(
        default_factory=DataQualityThresholds, alias="dataQuality"
    )
    metric: str = Field(
        default="f1",
        description="The metric compared with the champion (higher is better): f1, roc_auc, "
        "macro_f1, precision, recall.",
        pattern=r"^(f1|roc_auc|macro_f1|precision|recall|accuracy)$",
    )
    minimums: dict[str, float] = Field(
        default_factory=dict, description="Metric name -> minimum value the challenger must reach."
    )
    champion_margin: float = Field(
        default=0.0,
        alias="championMargin",
        ge=0,
        le=1,
        description="The challenger must beat the champion's metric by at least this much.",
    )
