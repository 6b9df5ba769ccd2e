"""Settings of one drift monitor (one per Model).

Defaults run on a laptop; on a cluster the operator sets `LOOPLINE_MONITOR_*` environment
variables from the Model's `spec.monitoring` block (detector, p-value, window, cooldown,
retrainOnDrift). Every field has a default so `loopline monitor serve --model x` just works.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.settings import get_settings

if TYPE_CHECKING:
    from loopline.types.model import MonitoringSpec

ENV_PREFIX = "LOOPLINE_MONITOR_"

DetectorName = Literal["ks", "mmd"]
Correction = Literal["bonferroni", "fdr"]
RequesterName = Literal["kubernetes", "log"]


class MonitorSettings(BaseSettings):
    """What one monitor watches, how it tests, when it asks for retraining."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    model: str = Field(default="model", min_length=1, description="Name of the Model resource.")
    namespace: str = Field(default="default", min_length=1, description="Namespace of the Model.")
    host: str = Field(default="127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(default=8090, ge=0, le=65535, description="HTTP port (0 = any free port).")
    detector: DetectorName = Field(
        default="ks", description="Drift test by name: ks (per feature) or mmd (multivariate)."
    )
    p_value: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="Significance level of one window's test."
    )
    correction: Correction = Field(
        default="bonferroni", description="Multiple-testing correction of the per-feature KS."
    )
    min_statistic: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description=(
            "Smallest KS distance that counts as drift. With thousands of rows a test finds "
            "differences too small to matter (time of day, slow wear); this is the effect size "
            "a recipe change has and noise does not. 0 disables it."
        ),
    )
    mmd_permutations: int = Field(
        default=100, ge=10, description="Permutations of the MMD test (detector=mmd)."
    )
    mmd_max_rows: int = Field(
        default=500,
        ge=20,
        description=(
            "Rows a side the MMD test subsamples to; its cost grows with the square "
            "(~5 s per window at 500 on 2 busy cores, see benchmarks/results/monitor.json)."
        ),
    )
    window_size: int = Field(
        default=1440,
        ge=20,
        description=(
            "Rows in the sliding window that is tested. It should span a whole daily cycle of "
            "the sampled traffic, or the shift pattern itself looks like drift."
        ),
    )
    window_step: int = Field(
        default=0,
        ge=0,
        description="New rows between two tests; 0 means window_size // 2 (half overlap).",
    )
    min_feature_rows: int = Field(
        default=20,
        ge=2,
        description="Non-missing values a feature needs in the window to be tested at all.",
    )
    consecutive_windows: int = Field(
        default=3, ge=1, description="Windows in a row that must drift before acting (K)."
    )
    cooldown_seconds: float = Field(
        default=3600.0, ge=0.0, description="After a request, no new request for this long."
    )
    retrain_on_drift: bool = Field(
        default=True, description="Ask for retraining on drift (false: report only)."
    )
    requester: RequesterName = Field(
        default="kubernetes",
        description="Where retraining requests go: kubernetes (annotate the Model) or log.",
    )
    kubeconfig: str = Field(
        default="", description="Kubeconfig path; empty means in-cluster, then ~/.kube/config."
    )
    queue_rows: int = Field(
        default=50_000, ge=1, description="Rows waiting to be tested; beyond, the oldest drop."
    )
    reference_uri: str = Field(
        default="",
        description=(
            "Where the reference sample comes from: models:/<name>@<alias> (MLflow), a "
            ".parquet path, or empty for models:/<namespace>.<model>@champion."
        ),
    )
    tracking_uri: str = Field(
        default="", description="MLflow tracking URI; empty means loopline.settings' URI."
    )
    reference_poll_seconds: float = Field(
        default=60.0,
        ge=0.0,
        description="How often to check for a new champion (0 = only on POST /v1/reference).",
    )
    state_dir: Path | None = Field(
        default=None,
        description="Where state survives restarts; empty means <state_dir>/monitor/<ns>/<model>.",
    )
    persist_seconds: float = Field(
        default=2.0, ge=0.0, description="Longest time new rows stay only in memory."
    )
    anomaly_window: int = Field(
        default=1000, ge=1, description="Recent scored rows the anomaly rate is computed over."
    )

    @model_validator(mode="after")
    def _window_consistent(self) -> MonitorSettings:
        if self.window_step > self.window_size:
            raise ValueError(
                f"window_step ({self.window_step}) is larger than window_size "
                f"({self.window_size}); rows would never be tested"
            )
        if self.min_feature_rows > self.window_size:
            raise ValueError(
                f"min_feature_rows ({self.min_feature_rows}) exceeds window_size "
                f"({self.window_size})"
            )
        return self

    @property
    def step(self) -> int:
        return self.window_step or max(1, self.window_size // 2)

    def resolved_state_dir(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        return get_settings().state_dir / "monitor" / self.namespace / self.model

    def resolved_reference_uri(self) -> str:
        if self.reference_uri:
            return self.reference_uri
        from loopline.types.common import registered_model_name

        return f"models:/{registered_model_name(self.namespace, self.model)}@champion"

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or get_settings().resolved_mlflow_tracking_uri()


def spec_fields(namespace: str, name: str, spec: MonitoringSpec) -> dict[str, Any]:
    """The settings a Model's `spec.monitoring` decides; the rest keep their defaults."""
    return {
        "model": name,
        "namespace": namespace,
        "detector": str(spec.detector.value),
        "p_value": spec.p_value,
        "window_size": spec.window_size,
        "cooldown_seconds": float(spec.cooldown_seconds),
        "retrain_on_drift": spec.retrain_on_drift,
    }


def settings_for_model(
    namespace: str, name: str, spec: MonitoringSpec, **overrides: Any
) -> MonitorSettings:
    """Monitor settings of one Model (the operator's view; overrides for local runs)."""
    return MonitorSettings(**{**spec_fields(namespace, name, spec), **overrides})


def env_for_model(namespace: str, name: str, spec: MonitoringSpec) -> dict[str, str]:
    """`LOOPLINE_MONITOR_*` variables for the monitor's container, from the Model's spec."""
    fields = spec_fields(namespace, name, spec)
    MonitorSettings(**fields)  # fail here, in the operator, not in a crash-looping pod
    return {
        f"{ENV_PREFIX}{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
        for key, value in fields.items()
    }
