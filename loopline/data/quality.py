"""The data quality gate: six dimensions scored on every training set before a model sees it.

| dimension | question | how |
| --- | --- | --- |
| completeness | are values missing? | GE not-null per column; score = worst column's non-null share |
| validity | are values possible? | GE range per feature (schema min/max) and dtype per column; label values in their set; score = worst column |
| uniqueness | one row per (entity, timestamp)? | GE compound-unique; score = share of rows not duplicated |
| consistency | same columns and dtypes as the reference? | GE column set + dtype family per column; score = share of checks passed |
| timeliness | is the newest row recent for the window? | GE max(timestamp) within `maxStalenessHours` of the window end (and not after it) |
| distribution | has a feature shifted against the reference? | PSI per feature on the reference's decile bins (numpy); score = share of features not shifted |

Advisory dimensions: a dimension is always scored and reported, but for some runs its verdict
does not fail the gate. A run triggered by drift (`trigger="drift"`) exists *because* the live
data moved away from the champion's training data, so a shifted training window is the
expected cause of the run, not a defect of the data: distribution is advisory there (scored,
per-feature PSI reported, marked `advisory` with the reason) and the other five dimensions
gate as always. Manual, scheduled and spec-change runs gate on all six
(`advisory_dimensions()`).

Great Expectations runs in an ephemeral context (no project files) with progress bars off. Two
measured choices keep it fast on a million rows: float columns are validated as float64 (GE's
range check is only vectorised for float64/int64; on float32 it falls back to a Python loop,
15x slower) and results use GE's BASIC format (SUMMARY's value counts cost more than the checks).
The distribution statistics are cheap numpy on the reference's bins: GE's
own distribution expectations would cost more than the whole gate.

`reference_stats()` summarises a reference frame as JSON-serialisable statistics (training
stores them in MLflow next to the model); `run_gate()` returns a `QualityReport` whose
`summary` is one line and whose JSON is the artifact; `enforce()` raises `QualityGateError`
with that summary when the gate fails. `advisory_dimensions(trigger)` names the dimensions that
do not gate a run started by `trigger`, with the reason.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from loopline.data.quality_checks import EXAMPLES, expectations_for, validate
from loopline.data.quality_report import (
    DIMENSIONS,
    DRIFT_ADVISORY,
    Dimension,
    DimensionScore,
    Failure,
    QualityGateError,
    QualityReport,
    advisory_dimensions,
    enforce,
    summary_line,
)
from loopline.data.reference_stats import (
    PSI_SHIFTED,
    FeatureStats,
    ReferenceStats,
    dtype_family,
    psi,
    reference_stats,
)
from loopline.data.schema import DatasetSchema
from loopline.types.common import Trigger
from loopline.types.policy import DataQualityThresholds

log = logging.getLogger(__name__)

# Re-exported: callers read the gate and its reference from one module.
__all__ = [
    "DIMENSIONS",
    "DRIFT_ADVISORY",
    "PSI_SHIFTED",
    "Dimension",
    "DimensionScore",
    "Failure",
    "FeatureStats",
    "QualityGateError",
    "QualityReport",
    "ReferenceStats",
    "advisory_dimensions",
    "dtype_family",
    "enforce",
    "psi",
    "reference_stats",
    "run_gate",
]


def _examples_of_rows(frame: pd.DataFrame, mask: pd.Series, schema: DatasetSchema) -> list[str]:
    rows = frame.loc[mask, [c for c in (schema.entity, schema.timestamp) if c in frame.columns]]
    return [" ".join(str(v) for v in r) for r in rows.head(EXAMPLES).itertuples(index=False)]


def _fraction(result: dict[str, Any], key: str = "unexpected_percent") -> float:
    value = result.get(key)
    return 0.0 if value is None else float(value) / 100.0


@dataclass
class _Tally:
    """What the scorers found, per dimension, while the gate walks the checks."""

    scores: dict[Dimension, dict[str, float]] = field(
        default_factory=lambda: {d: {} for d in DIMENSIONS}
    )
    checks: dict[Dimension, int] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, 0))
    failed: dict[Dimension, int] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, 0))
    failures: list[Failure] = field(default_factory=list)
    notes: dict[Dimension, str] = field(default_factory=lambda: dict.fromkeys(DIMENSIONS, ""))
    psi: dict[str, float | None] = field(default_factory=dict)

    def record(self, dimension: Dimension, key: str, share: float, failure: Failure | None) -> None:
        self.checks[dimension] += 1
        self.scores[dimension][key] = share
        if failure is not None:
            self.failures.append(failure)
            self.failed[dimension] += 1


@dataclass(frozen=True)
class _Check:
    """One Great Expectations result, with what its scorer needs to judge it."""

    dimension: Dimension
    kind: str  # the expectation type
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    result: dict[str, Any]
    frame: pd.DataFrame
    schema: DatasetSchema
    thresholds: DataQualityThresholds
    end: datetime

    def failure(
        self,
        observed: str,
        *,
        column: str | None = None,
        fraction: float | None = None,
        examples: list[str] | None = None,
    ) -> Failure:
        return Failure(
            dimension=self.dimension,
            expectation=self.kind,
            column=column if column is not None else self.column,
            observed=observed,
            unexpected_fraction=fraction,
            examples=examples or [],
        )


# A scorer turns one check into its share of good values (0..1) and a Failure when it fails.
_Scored = tuple[float, Failure | None]


def _score_completeness(c: _Check) -> _Scored:
    share = 1.0 - _fraction(c.result)
    if share >= c.thresholds.completeness:
        return share, None
    assert c.column is not None
    rows = _examples_of_rows(c.frame, c.frame[c.column].isna(), c.schema)
    return share, c.failure(f"{1 - share:.2%} null", fraction=1 - share, examples=rows)


def _score_validity(c: _Check) -> _Scored:
    if c.kind == "expect_column_values_to_be_in_type_list":
        share = 1.0 if c.success else 0.0
        observed = f"dtype {c.result.get('observed_value')}"
    else:
        share = 1.0 - _fraction(c.result, "unexpected_percent_nonmissing")
        observed = f"{1 - share:.2%} outside the allowed values"
    if share >= c.thresholds.validity:
        return share, None
    values = [str(v) for v in c.result.get("partial_unexpected_list", [])][:EXAMPLES]
    return share, c.failure(observed, fraction=1 - share, examples=values)


def _score_uniqueness(c: _Check) -> _Scored:
    share = 1.0 - _fraction(c.result)
    if share >= c.thresholds.uniqueness:
        return share, None
    keys = c.kwargs["column_list"]
    dup = c.frame.duplicated(keys, keep=False)
    return share, c.failure(
        f"{int(dup.sum())} rows share an ({', '.join(keys)}) key",
        column=",".join(keys),
        fraction=1 - share,
        examples=_examples_of_rows(c.frame, dup, c.schema),
    )


def _score_column_set(c: _Check) -> _Scored:
    if c.success:
        return 1.0, None
    seen = set(c.result.get("observed_value") or [])
    want = set(c.kwargs["column_set"])
    return 0.0, c.failure(f"missing {sorted(want - seen)}, unexpected {sorted(seen - want)}")


def _score_timeliness(c: _Check) -> _Scored:
    value = c.result.get("observed_value")
    newest = pd.Timestamp(value) if value else None
    share, observed = _timeliness(newest, c.end, c.thresholds.max_staleness_hours)
    if share >= c.thresholds.timeliness and c.success:
        return share, None
    return share, c.failure(observed)


_SCORERS: dict[Dimension, Callable[[_Check], _Scored]] = {
    "completeness": _score_completeness,
    "validity": _score_validity,
    "uniqueness": _score_uniqueness,
    "consistency": _score_column_set,
    "timeliness": _score_timeliness,
}


def _score_dtypes(frame: pd.DataFrame, reference: ReferenceStats, tally: _Tally) -> None:
    """Consistency of dtypes: the family (float/int/string/datetime/...) of every column the
    reference has. Plain pandas: GE's type-list check cannot name a tz-aware datetime dtype."""
    for col, family in reference.columns.items():
        if col not in frame.columns:
            continue
        now_family = dtype_family(frame[col].dtype)
        failure = None
        if now_family != family:
            failure = Failure(
                dimension="consistency",
                expectation="dtype_family_unchanged",
                column=col,
                observed=f"dtype {frame[col].dtype} ({now_family}), reference {family}",
            )
        tally.record("consistency", f"dtype:{col}", float(failure is None), failure)


def _score_distribution(
    frame: pd.DataFrame, schema: DatasetSchema, reference: ReferenceStats, tally: _Tally
) -> None:
    """Distribution: PSI per feature against the reference bins (numpy)."""
    for name in schema.feature_names:
        if name not in frame.columns or name not in reference.features:
            continue
        ref = reference.features[name]
        values = frame[name].to_numpy(dtype=np.float64)
        value = psi(ref, values)
        tally.psi[name] = round(value, 6) if math.isfinite(value) else None
        failure = None
        if value > PSI_SHIFTED:
            ok = values[~np.isnan(values)]
            mean = float(ok.mean()) if ok.size else math.nan
            failure = Failure(
                dimension="distribution",
                expectation="population_stability_index",
                column=name,
                observed=f"PSI {value:.2f} > {PSI_SHIFTED}; mean {mean:.4g} vs reference "
                f"{ref.mean:.4g} (std {ref.std:.3g})",
                examples=[f"{q:.4g}" for q in np.quantile(ok, [0.1, 0.5, 0.9])] if ok.size else [],
            )
        tally.record("distribution", name, float(failure is None), failure)


def _dimension_scores(
    tally: _Tally, thresholds: DataQualityThresholds, advisory: dict[Dimension, str]
) -> dict[str, DimensionScore]:
    """Each dimension's score: the worst column, except consistency and distribution, which
    are shares of checks passed (one shifted feature of twenty is not a 0)."""
    dimensions: dict[str, DimensionScore] = {}
    for d in DIMENSIONS:
        scores = list(tally.scores[d].values())
        if d in ("distribution", "consistency"):
            score = float(np.mean(scores)) if scores else 1.0
        else:
            score = float(min(scores)) if scores else 1.0
        threshold = float(getattr(thresholds, d))
        dimensions[d] = DimensionScore(
            score=round(score, 6),
            threshold=threshold,
            passed=score >= threshold
            and (d not in ("consistency", "timeliness") or tally.failed[d] == 0),
            checks=tally.checks[d],
            failed_checks=tally.failed[d],
            note="; ".join(n for n in (advisory.get(d, ""), tally.notes[d]) if n),
            advisory=d in advisory,
        )
    return dimensions


def run_gate(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    thresholds: DataQualityThresholds | None = None,
    reference: ReferenceStats | None = None,
    window_end: datetime | None = None,
    *,
    trigger: Trigger | str | None = None,
) -> QualityReport:
    """Score `frame` on the six dimensions and decide pass/fail against `thresholds`.

    `window_end` is the end of the training window (timeliness: the newest row must be within
    `maxStalenessHours` before it, and none after it); default: now. Without a `reference`,
    consistency is checked against the declared schema and distribution is not scored (1.0,
    with a note): the first model of a data set has nothing to compare with. `trigger` is why
    the training run started: for a drift-triggered run distribution is advisory (scored and
    reported, not gating; see `advisory_dimensions`).
    """
    started = time.perf_counter()
    thresholds = thresholds or DataQualityThresholds()
    end = (window_end or datetime.now(UTC)).astimezone(UTC)
    if frame.empty:
        raise ValueError("the training set is empty: nothing to check (check the data window)")

    # float64 for GE's vectorised paths (see the module docstring); a copy, the caller's is kept.
    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c].dtype)]
    checked = frame.astype(dict.fromkeys(floats, "float64")) if floats else frame
    expectations = expectations_for(frame, schema, thresholds, reference, end)
    results = validate(checked, [e for _, e in expectations])

    tally = _Tally()
    for (dimension, _), result in zip(expectations, results, strict=True):
        cfg = result.expectation_config
        column = cfg.kwargs.get("column")
        exc = result.exception_info or {}
        if exc.get("raised_exception"):
            raise RuntimeError(f"data quality check {cfg.type} on {column} errored: {exc}")
        check = _Check(
            dimension=dimension,
            kind=cfg.type,
            column=column,
            kwargs=dict(cfg.kwargs),
            success=bool(result.success),
            result=dict(result.result or {}),
            frame=frame,
            schema=schema,
            thresholds=thresholds,
            end=end,
        )
        share, failure = _SCORERS[dimension](check)
        tally.record(dimension, f"{cfg.type}:{column}", share, failure)
    if reference is None:
        tally.notes["distribution"] = "no reference statistics: not scored"
    else:
        _score_dtypes(frame, reference, tally)
        _score_distribution(frame, schema, reference, tally)

    advisory = advisory_dimensions(trigger)
    dimensions = _dimension_scores(tally, thresholds, advisory)
    failures = [
        f.model_copy(update={"advisory": True}) if f.dimension in advisory else f
        for f in tally.failures
    ]
    passed = not any(d.blocks for d in dimensions.values())
    duration = time.perf_counter() - started
    report = QualityReport(
        passed=passed,
        rows=len(frame),
        dimensions=dimensions,
        failures=failures,
        psi=tally.psi,
        summary=summary_line(passed, dimensions, failures, len(frame), duration),
        duration_seconds=round(duration, 3),
        window_end=end,
    )
    log.info("%s", report.summary)
    return report


def _timeliness(newest: pd.Timestamp | None, end: datetime, max_hours: float) -> tuple[float, str]:
    """1.0 when the newest row is within the allowed staleness; decays as it gets older."""
    if newest is None or pd.isna(newest):
        return 0.0, "no timestamps"
    newest = newest.tz_localize(UTC) if newest.tzinfo is None else newest.tz_convert(UTC)
    age_h = (pd.Timestamp(end) - newest).total_seconds() / 3600.0
    if age_h < 0:
        return 0.0, f"newest row {newest.isoformat()} is {-age_h:.1f} h after the window end"
    if age_h <= max_hours:
        return 1.0, f"newest row {age_h:.1f} h before the window end"
    return max_hours / age_h, f"newest row {age_h:.1f} h old (allowed {max_hours:g} h)"
