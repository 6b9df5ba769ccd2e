"""The data quality gate's verdict: six dimensions, their scores, the failed checks and a
one-line summary. The gate (`loopline.data.quality`) produces it; training logs it as an
artifact and refuses a failing set with `QualityGateError`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from loopline.types.common import Trigger

Dimension = Literal[
    "completeness", "validity", "uniqueness", "consistency", "timeliness", "distribution"
]
DIMENSIONS: tuple[Dimension, ...] = (
    "completeness",
    "validity",
    "uniqueness",
    "consistency",
    "timeliness",
    "distribution",
)
DRIFT_ADVISORY = "advisory: run triggered by drift"


class QualityGateError(RuntimeError):
    """The training set failed the data quality gate; the message is the report's summary."""

    def __init__(self, report: QualityReport) -> None:
        super().__init__(report.summary)
        self.report = report


def advisory_dimensions(trigger: Trigger | str | None) -> dict[Dimension, str]:
    """Dimensions scored and reported but not gating for a run started by `trigger`, with why.

    A drift-triggered run exists because the monitor saw the live data move away from the
    champion's training data (e.g. a recipe change): its training window is *expected* to be
    shifted against the champion's reference, so refusing it on `distribution` would refuse
    exactly the data the new model needs. Every other trigger (manual, schedule, spec-change,
    or none given) gates on all six dimensions.
    """
    if trigger is not None and Trigger(trigger) == Trigger.DRIFT:
        return {"distribution": DRIFT_ADVISORY}
    return {}


# --- the report -----------------------------------------------------------------------------


class Failure(BaseModel):
    """One failed check: which, on what, what was seen, and a few example values or rows."""

    model_config = ConfigDict(extra="forbid")

    dimension: Dimension
    expectation: str
    column: str | None = None
    observed: str = ""
    unexpected_fraction: float | None = None
    examples: list[str] = Field(default_factory=list)
    advisory: bool = Field(
        default=False, description="The check's dimension is advisory: it did not fail the gate."
    )


class DimensionScore(BaseModel):
    """One dimension's score against its threshold.

    `passed` is the score's verdict either way; an `advisory` dimension that did not pass is
    reported (with the reason in `note`) but does not fail the report.
    """

    model_config = ConfigDict(extra="forbid")

    score: float = Field(ge=0, le=1)
    threshold: float
    passed: bool
    checks: int
    failed_checks: int
    note: str = ""
    advisory: bool = Field(
        default=False, description="Scored and reported, but not gating for this run (see note)."
    )

    @property
    def blocks(self) -> bool:
        """Whether this dimension fails the report: below its threshold and not advisory."""
        return not self.passed and not self.advisory


class QualityReport(BaseModel):
    """The gate's verdict: the artifact saved with the training run and summarised in one line."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    rows: int
    dimensions: dict[str, DimensionScore]
    failures: list[Failure]
    psi: dict[str, float | None] = Field(
        default_factory=dict,
        description="Population stability index per feature against the reference (empty "
        "without one; null: the feature has no values in the window).",
    )
    summary: str
    duration_seconds: float
    window_end: datetime
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def scores(self) -> dict[str, float]:
        return {name: d.score for name, d in self.dimensions.items()}

    def advisory(self) -> list[str]:
        """The dimensions that were advisory (not gating) in this run."""
        return [name for name, d in self.dimensions.items() if d.advisory]

    def save(self, path: Path) -> Path:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> QualityReport:
        return cls.model_validate_json(Path(path).read_text())


def enforce(report: QualityReport) -> QualityReport:
    """Raise `QualityGateError` (message: the one-line summary) unless the report passed."""
    if not report.passed:
        raise QualityGateError(report)
    return report


def summary_line(
    passed: bool,
    dimensions: dict[str, DimensionScore],
    failures: list[Failure],
    rows: int,
    seconds: float,
) -> str:
    def below(name: str, d: DimensionScore) -> str:
        first = next((f for f in failures if f.dimension == name), None)
        where = (
            f" ({first.column}: {first.observed})"
            if first and first.column
            else (f" ({first.observed})" if first else "")
        )
        return f"{name} {d.score:.3f} < {d.threshold:.3f}{where}"

    # Advisory dimensions below their threshold are named either way: not gating is not hiding.
    soft = "".join(
        f"; {below(name, d)} [{d.note}]"
        for name, d in dimensions.items()
        if d.advisory and not d.passed
    )
    if passed:
        scores = " ".join(f"{name} {d.score:.3f}" for name, d in dimensions.items())
        return f"data quality passed ({rows} rows, {seconds:.1f} s): {scores}{soft}"
    bad = [below(name, d) for name, d in dimensions.items() if d.blocks]
    return f"data quality FAILED ({rows} rows): " + "; ".join(bad) + soft
