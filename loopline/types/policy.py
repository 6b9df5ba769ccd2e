"""Training parameters and the validation policy, shared by the Model CRD and training runs.

They live here (not in the operator or the pipeline) because the same object is written by a
user in the Model spec, carried into a training run, and applied by the gates inside it.

The metric names below are the ones `loopline.models.evaluation.evaluate_bundle` reports (a
unit test compares them), so a policy naming any other metric is refused when it is applied
instead of failing the champion gate at the end of a training run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic.config import JsonDict

from loopline.types.common import Spec, Task

# Metrics the evaluation reports per task that are scores (higher is better): the ones a
# policy may compare with the champion, and the ones it may set a minimum for.
ANOMALY_COMPARABLE: tuple[str, ...] = ("f1", "roc_auc", "precision", "recall")
CLASSIFICATION_COMPARABLE: tuple[str, ...] = (
    "f1",
    "macro_f1",
    "roc_auc",
    "precision",
    "recall",
    "accuracy",
)
_GAIN = "_gain_over_baseline"
ANOMALY_MINIMUM_METRICS: tuple[str, ...] = (
    *ANOMALY_COMPARABLE,
    "fallback_f1",
    "fallback_roc_auc",
    "fallback_precision",
    "fallback_recall",
    "baseline_f1",
    "baseline_roc_auc",
    "baseline_precision",
    "baseline_recall",
    "f1" + _GAIN,
    "roc_auc" + _GAIN,
)
CLASSIFICATION_MINIMUM_METRICS: tuple[str, ...] = (
    *CLASSIFICATION_COMPARABLE,
    "fallback_macro_f1",
    "fallback_accuracy",
    "baseline_macro_f1",
    "baseline_accuracy",
    "macro_f1" + _GAIN,
)
# Reported by the anomaly evaluation for people and for comparison, not offered to the gate:
# the PCA baseline's scores (the gate already has the max-|z| baseline and its gains; every
# name here would lengthen the CRD's CEL list) and the reliability figures, which are rates
# and counts where lower is better, so a *minimum* of them means nothing.
RELIABILITY_METRICS: tuple[str, ...] = (
    "far",
    "mar",
    "alarm_events_per_entity_day",
    "false_alarm_events_per_entity_day",
    "fault_events_detected",
    "detection_delay_median_readings",
    "detection_delay_max_readings",
    "far_budget_met",
)
ANOMALY_REPORTED_ONLY: tuple[str, ...] = (
    "pca_f1",
    "pca_roc_auc",
    "pca_precision",
    "pca_recall",
    "pca_alarm_rate",
    "pca_components",
    "f1_gain_over_pca",
    "roc_auc_gain_over_pca",
    "eval_fault_events",
    "eval_entity_days",
    "max_false_alarm_rate",
    *(p + m for p in ("", "fallback_", "baseline_", "pca_") for m in RELIABILITY_METRICS),
)
# Reported besides those by a bundle whose detector is the window one (`training.detector`).
WINDOW_REPORTED_ONLY: tuple[str, ...] = (
    "window_size",
    "windowed_rows",
    *("dense_" + m for m in ("f1", "roc_auc", "precision", "recall", "alarm_rate")),
    *("dense_" + m for m in RELIABILITY_METRICS),
)
MAX_MINIMUMS = 16
MAX_HIDDEN_UNITS = 4096
MIN_WINDOW, MAX_WINDOW = 2, 64
Detector = Literal["dense", "window"]

MetricName = Literal["f1", "roc_auc", "macro_f1", "precision", "recall", "accuracy"]


def comparable_metrics(task: Task) -> tuple[str, ...]:
    return ANOMALY_COMPARABLE if task == Task.ANOMALY_DETECTION else CLASSIFICATION_COMPARABLE


def minimum_metrics(task: Task) -> tuple[str, ...]:
    return (
        ANOMALY_MINIMUM_METRICS
        if task == Task.ANOMALY_DETECTION
        else CLASSIFICATION_MINIMUM_METRICS
    )


def cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


MINIMUMS_RANGE_MESSAGE = (
    "validation.minimums: a score's minimum must lie in 0..1 (only *_gain_over_baseline "
    "metrics may be negative, down to -1)"
)
VALIDATION_RULES: list[JsonDict] = [
    {
        "rule": f"self.all(k, k.endsWith('{_GAIN}') || self[k] >= 0.0)",
        "message": MINIMUMS_RANGE_MESSAGE,
        "reason": "FieldValueInvalid",
    },
]


class TrainingParams(Spec):
    """Knobs of the torch models; defaults suit the factory sensor data of the generator."""

    epochs: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=256, alias="batchSize", ge=8, le=65536)
    learning_rate: float = Field(default=1e-3, alias="learningRate", gt=0, le=1)
    hidden_units: list[Annotated[int, Field(ge=1, le=MAX_HIDDEN_UNITS)]] = Field(
        default_factory=lambda: [32, 16],
        alias="hiddenUnits",
        min_length=1,
        max_length=6,
        description=f"Widths of the hidden layers, each 1..{MAX_HIDDEN_UNITS}.",
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
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    detector: Detector = Field(
        default="dense",
        description=(
            "Anomaly detection: 'dense' scores each reading alone; 'window' scores each "
            "entity's last windowSize readings together (an entity's first windowSize-1 "
            "readings get the dense verdict, flagged in the `detector` output)."
        ),
    )
    window_size: int = Field(
        default=4,
        alias="windowSize",
        ge=MIN_WINDOW,
        le=MAX_WINDOW,
        description=f"Readings per window of the 'window' detector, {MIN_WINDOW}..{MAX_WINDOW}.",
    )


class DataQualityThresholds(Spec):
    """Minimum score (0..1) per data quality dimension; a training set below any one fails."""

    completeness: float = Field(default=0.95, ge=0, le=1)
    validity: float = Field(default=0.99, ge=0, le=1)
    uniqueness: float = Field(default=1.0, ge=0, le=1)
    consistency: float = Field(default=1.0, ge=0, le=1)
    timeliness: float = Field(default=1.0, ge=0, le=1)
    distribution: float = Field(default=0.8, ge=0, le=1)
    max_staleness_hours: float = Field(default=24.0, alias="maxStalenessHours", gt=0, le=87600)


class ValidationPolicy(Spec):
    """What a new model version must show before it may replace the champion."""

    # Which metric names fit depends on the task, so that check is on `ModelSpec` and
    # `TrainingRunSpec` (`minimums_problem`); here only values no score can reach are refused.

    data_quality: DataQualityThresholds = Field(
        default_factory=DataQualityThresholds, alias="dataQuality"
    )
    metric: MetricName = Field(
        default="f1",
        description="The metric compared with the champion (higher is better): f1, roc_auc, "
        "precision, recall; classification also macro_f1 and accuracy.",
    )
    minimums: dict[str, Annotated[float, Field(ge=-1, le=1)]] = Field(
        default_factory=dict,
        max_length=MAX_MINIMUMS,
        description="Metric name -> minimum value the challenger must reach (at most "
        f"{MAX_MINIMUMS}; names as the evaluation reports them for the Model's task).",
        json_schema_extra={"x-kubernetes-validations": list(VALIDATION_RULES)},
    )
    champion_margin: float = Field(
        default=0.0,
        alias="championMargin",
        ge=0,
        le=1,
        description="The challenger must beat the champion's metric by at least this much.",
    )

    @field_validator("minimums")
    @classmethod
    def _in_range(cls, minimums: dict[str, float]) -> dict[str, float]:
        if any(v < 0 and not k.endswith(_GAIN) for k, v in minimums.items()):
            raise ValueError(MINIMUMS_RANGE_MESSAGE)
        return minimums


METRIC_MESSAGE = (
    "validation.metric is not reported for an anomaly-detection Model; use one of "
    + ", ".join(ANOMALY_COMPARABLE)
)
MINIMUMS_TASK_MESSAGE = (
    "validation.minimums names a metric the Model's task does not report: anomaly-detection "
    f"reports {', '.join(ANOMALY_MINIMUM_METRICS)}; classification reports "
    f"{', '.join(CLASSIFICATION_MINIMUM_METRICS)}"
)


def minimums_problem(task: Task, policy: ValidationPolicy) -> str | None:
    """The message for minimums the task's evaluation does not report, or None: the CRD
    rule's message (the API server cannot afford to list the offending names; this adds
    them). The Model and a training run both check it."""
    unknown = sorted(k for k in policy.minimums if k not in minimum_metrics(task))
    if not unknown:
        return None
    return f"{MINIMUMS_TASK_MESSAGE} (not {task.value}: {', '.join(unknown)})"


def policy_problem(task: Task, policy: ValidationPolicy) -> str | None:
    """What in `policy` the task's evaluation cannot check (metric first), or None."""
    if policy.metric not in comparable_metrics(task):
        return METRIC_MESSAGE
    return minimums_problem(task, policy)
