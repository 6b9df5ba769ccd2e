"""Settings of the Loopline model server runtime.

They come from three places, later ones winning: defaults here, `LOOPLINE_SERVING_*`
environment variables (how a Seldon `Server` pod is configured), and the `parameters.extra`
block of a model's `model-settings.json` (how one server loads several models with different
URIs, and how the local manager changes the canary weight without a restart).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.serving.callers import DEFAULT_MAX_CALLERS


class ServingSettings(BaseSettings):
    """What one loaded model needs: where it comes from, how it splits traffic, where samples go."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_SERVING_", extra="forbid")

    model_uri: str = Field(
        default="",
        description=(
            "MLflow URI of the champion (primary) model, e.g. models:/ns.drill-ae@champion or "
            "models:/ns.drill-ae/3. Empty means the model-settings parameters.uri."
        ),
    )
    canary_model_uri: str = Field(
        default="", description="MLflow URI of a canary version; empty means no canary."
    )
    canary_weight: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share of requests the canary answers (0..1); needs canary_model_uri.",
    )
    model_name: str = Field(
        default="",
        description="Name of the Loopline Model (metrics label, samples); empty means the "
        "MLServer model name.",
    )
    version_label: str = Field(
        default="",
        description="Version reported when model_uri is a folder (no registry version); empty "
        "means the `-v<version>` suffix of the model name, else the folder path.",
    )
    tracking_uri: str = Field(
        default="",
        description="MLflow tracking URI; empty means loopline.settings' resolved URI.",
    )
    fallback_on_missing_sensors: bool = Field(
        default=True,
        description="Rows with a missing non-core sensor go to the core-sensor fallback model; "
        "false makes such a request a 422 naming the sensors (spec.serving."
        "fallbackOnMissingSensors).",
    )
    max_rows: int = Field(
        default=4096, ge=1, description="Largest batch (rows) one request may carry; more is 413."
    )
    monitor_url: str = Field(
        default="", description="Base URL of the drift monitor; empty disables sampling."
    )
    sample_rate: float = Field(
        default=0.1, ge=0.0, le=1.0, description="Share of requests whose rows are sampled."
    )
    sample_queue_size: int = Field(
        default=64, ge=1, description="Sample batches waiting to be sent; more are dropped."
    )
    torch_threads: int = Field(
        default=1,
        ge=0,
        description="torch intra-op threads for scoring (0 leaves torch's default); one thread "
        "is fastest for the small batches a line sends and leaves cores to the server.",
    )
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest REST request body the lean server reads (bytes); more is 413 "
        "before any of it is parsed. MLServer hosts have their own limits.",
    )
    sample_timeout_s: float = Field(
        default=2.0, gt=0.0, description="Timeout of one POST to the monitor."
    )
    drift_poll_s: float = Field(
        default=2.0,
        ge=0.0,
        description="How often the server reads the drift monitor's status for the per-row "
        "model_state output (seconds); 0 stops reading it (model_state is then unknown).",
    )
    alarm_max_entities: int = Field(
        default=10_000,
        ge=1,
        description="Entities whose recent readings the server keeps for the alarm_event "
        "output (and a window detector's windows); beyond it the least recently seen one is "
        "forgotten.",
    )
    callers: list[str] = Field(
        default_factory=list,
        description="Callers (Loopline-Caller header values) counted under their own name in "
        "the loopline_usage_* metrics; any other caller is `other`. Empty: the first "
        "max_callers distinct callers keep their name. JSON list in the environment.",
    )
    max_callers: int = Field(
        default=DEFAULT_MAX_CALLERS,
        ge=0,
        description="Distinct callers a server labels by name when `callers` is empty; later "
        "ones are counted as `other` (bounds the metrics' series).",
    )
    require_caller_token: bool = Field(
        default=False,
        description="Refuse inference without a valid bearer token (401 naming the "
        "Authorization header) instead of counting it as `unauthenticated` or by its "
        "Loopline-Caller header. A token the API server could not verify still passes.",
    )
    caller_token_review: bool = Field(
        default=True,
        description="Verify a request's `Authorization: Bearer` token with a Kubernetes "
        "TokenReview and count the caller as the verified identity (sa:<ns>/<name>).",
    )
    caller_kubeconfig: str = Field(
        default="",
        description="Kubeconfig of the API server that verifies tokens; empty: in a pod its "
        "own ServiceAccount (in-cluster), elsewhere the default kubeconfig.",
    )
    caller_token_audiences: list[str] = Field(
        default_factory=list,
        description="Audiences a caller's token must be for (JSON list in the environment); "
        "empty: the API server's own.",
    )
    caller_cache_ttl_s: float = Field(
        default=300.0, ge=0.0, description="How long a verified token's identity is kept."
    )
    caller_invalid_ttl_s: float = Field(
        default=30.0, ge=0.0, description="How long a refused token stays `unauthenticated`."
    )
    caller_failure_ttl_s: float = Field(
        default=10.0,
        ge=0.0,
        description="After a failed TokenReview (API server down or slow), how long no new "
        "review is tried; requests are counted by their header meanwhile.",
    )
    caller_cache_size: int = Field(
        default=10_000, ge=1, description="Token verdicts kept; the oldest goes beyond it."
    )
    caller_verify_wait_s: float = Field(
        default=0.25,
        ge=0.0,
        description="Longest a request waits for its token's first review; a slower one "
        "finishes in the background and the request is counted by its header.",
    )
    caller_review_timeout_s: float = Field(
        default=2.0, gt=0.0, description="Timeout of one TokenReview call."
    )

    @classmethod
    def from_sources(cls, extra: dict[str, Any] | None) -> ServingSettings:
        """Environment first, then `parameters.extra` of the model settings on top of it."""
        unknown = sorted(set(extra or {}) - set(cls.model_fields))
        if unknown:
            raise ValueError(
                f"unknown serving setting(s) in model-settings parameters.extra: {unknown}; "
                f"known: {sorted(cls.model_fields)}"
            )
        return cls(**(extra or {}))
