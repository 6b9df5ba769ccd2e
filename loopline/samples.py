"""The payload sample a model server sends to its drift monitor.

It is the one contract between `loopline.serving` and `loopline.monitoring`, so it lives in the
core where both can import it without importing each other.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

SAMPLES_PATH = "/v1/samples"


class SampleBatch(BaseModel):
    """Rows a model server saw, in request order, with what the model said about them."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(description="Name of the Loopline Model (the custom resource).")
    model_version: str = Field(alias="modelVersion", description="Registry version that answered.")
    feature_names: list[str] = Field(alias="featureNames", min_length=1)
    rows: list[list[float | None]] = Field(
        description="One row per scored instance; None where a sensor was missing or NaN."
    )
    machine_ids: list[str] | None = Field(default=None, alias="machineIds")
    scores: list[float] | None = Field(default=None, description="Anomaly score per row.")
    decisions: list[bool] | None = Field(default=None, description="is_anomaly per row.")
    fallback: list[bool] | None = Field(default=None, description="Scored by the fallback model.")
    sent_at: datetime = Field(default_factory=lambda: datetime.now(UTC), alias="sentAt")

    @model_validator(mode="after")
    def _lengths_agree(self) -> SampleBatch:
        width = len(self.feature_names)
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise ValueError(f"rows[{i}] has {len(row)} values, featureNames has {width}")
        for name in ("machine_ids", "scores", "decisions", "fallback"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.rows):
                raise ValueError(f"{name} has {len(values)} entries for {len(self.rows)} rows")
        return self
