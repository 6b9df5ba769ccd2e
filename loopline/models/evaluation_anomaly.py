"""The anomaly half of the evaluation: four detectors side by side, as a reliability engineer
reads them.

Detectors: the primary autoencoder (no prefix; with `training.detector: window`, the window
detector, which keeps the per-row verdict for an entity's first readings, and then the per-row
autoencoder alone as `dense_`), the core-sensor fallback (`fallback_`), the
max-|z| baseline (`baseline_`) and the PCA T² + Q baseline (`pca_`). For each: precision,
recall, F1, ROC-AUC and alarm rate per row, then FAR, MAR, alarm events per entity-day after
k-of-n debouncing and detection delay per labelled fault event
(`loopline.models.reliability`). The fallback is judged on the rows whose core sensors are
present, the others on the rows with every feature.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from loopline.models.baseline import RangeBaseline
from loopline.models.bundle import ModelBundle
from loopline.models.evaluation_split import label_values
from loopline.models.pca_baseline import PcaBaseline
from loopline.models.reliability import event_counts, reliability
from loopline.models.score_baseline import BASELINE_KEY, BaselineCalibration, relative_scores
from loopline.models.windowing import score_sequence
from loopline.types.alarms import AlarmPolicy
from loopline.types.dataset import DatasetRoles

# (prefix, name in the report)
DETECTORS: tuple[tuple[str, str], ...] = (
    ("", "primary (autoencoder)"),
    ("dense_", "per-row autoencoder (the window detector's first readings)"),
    ("fallback_", "fallback (core sensors)"),
    ("baseline_", r"baseline: max-\|z\|"),  # escaped: a bare | would split the table cell
    ("pca_", "baseline: PCA T² + Q"),
)


def flags(labels: pd.Series) -> np.ndarray:
    return label_values(labels).eq("1").to_numpy(np.int64)


def binary(prefix: str, y: np.ndarray, score: np.ndarray, flag: np.ndarray) -> dict[str, float]:
    p, r, f, _ = precision_recall_fscore_support(
        y, flag.astype(np.int64), average="binary", zero_division=0
    )
    auc = roc_auc_score(y, score) if 0 < y.sum() < len(y) else math.nan
    return {
        f"{prefix}precision": float(p),
        f"{prefix}recall": float(r),
        f"{prefix}f1": float(f),
        f"{prefix}roc_auc": float(auc),
        f"{prefix}alarm_rate": float(flag.mean()) if len(flag) else math.nan,
    }


def baseline_over(
    rows: pd.DataFrame, roles: DatasetRoles, u: np.ndarray, readings: int, cal: BaselineCalibration
) -> np.ndarray:
    """Per row (in the order of `rows`), whether its score relative to its entity's previous
    ones is over the calibrated relative threshold, each entity followed in time order."""
    order = (
        pd.DataFrame({"e": rows[roles.entity].to_numpy(), "t": rows[roles.timestamp].to_numpy()})
        .sort_values(["e", "t"], kind="stable")
        .index.to_numpy()
    )
    rel = np.empty(len(u), dtype=np.float64)
    rel[order] = relative_scores(
        rows[roles.entity].to_numpy()[order], u[order], readings, cal.reference
    )
    return rel > cal.threshold


def _order_columns(df: pd.DataFrame, roles: DatasetRoles) -> None:
    missing = [c for c in (roles.entity, roles.timestamp) if c not in df.columns]
    if missing:
        raise ValueError(
            f"evaluation set lacks the entity/timestamp column(s) {missing}: alarm events and "
            "detection delays are counted per entity in time order"
        )


def evaluate_anomaly(
    bundle: ModelBundle,
    full: pd.DataFrame,
    core_rows: pd.DataFrame,
    roles: DatasetRoles,
    settings: AlarmPolicy,
) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """(metrics, fault events per detector) of the four detectors."""
    _order_columns(full, roles)
    names, core = bundle.feature_names, bundle.core_feature_names
    x, xc = full[names].to_numpy(np.float32), core_rows[core].to_numpy(np.float32)
    y, yc = flags(full[roles.label]), flags(core_rows[roles.label])
    metrics: dict[str, float] = {"eval_fault_rate": float(y.mean())}
    ent, ts = full[roles.entity].to_numpy(), full[roles.timestamp].to_numpy()
    metrics |= event_counts(ent, ts, y)
    if settings.max_false_alarm_rate is not None:
        metrics["max_false_alarm_rate"] = settings.max_false_alarm_rate
    faults: dict[str, list[dict[str, Any]]] = {}

    baseline = bundle.metadata.get(BASELINE_KEY)
    primary_key = "window" if bundle.window is not None else "dense"
    keys = {"": primary_key, "dense_": "dense", "fallback_": "fallback", "baseline_": "baseline"}

    def judge(
        prefix: str, rows: pd.DataFrame, y_: np.ndarray, s: np.ndarray, f: Any, t: Any
    ) -> None:
        over = np.asarray(f, dtype=bool)
        if baseline:  # the verdict serving's alarms take: against the entity's own level
            key = keys.get(prefix, prefix.rstrip("_"))
            cal = BaselineCalibration.from_dict(baseline["detectors"][key])
            u = np.asarray(s, dtype=np.float64) / np.asarray(t, dtype=np.float64)
            over = baseline_over(rows, roles, u, int(baseline["readings"]), cal)
        metrics.update(binary(prefix, y_, s, over))
        result = reliability(
            rows[roles.entity].to_numpy(),
            rows[roles.timestamp].to_numpy(),
            y_,
            over,
            settings,
            prefix,
        )
        metrics.update(result.metrics)
        faults[prefix or "primary"] = result.faults

    res, windowed = score_sequence(bundle, ent, ts, x)
    judge("", full, y, res["anomaly_score"], res["is_anomaly"], res["threshold"])
    if bundle.window is not None:  # what the window adds over the per-row verdict
        dense = bundle.score(x)
        judge("dense_", full, y, dense["anomaly_score"], dense["is_anomaly"], dense["threshold"])
        metrics["window_size"] = float(bundle.window_size)
        metrics["windowed_rows"] = float(windowed.mean()) if len(windowed) else math.nan
    resf = bundle.score_fallback(xc)
    judge("fallback_", core_rows, yc, resf["anomaly_score"], resf["is_anomaly"], resf["threshold"])
    baselines: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
        ("baseline_", "baseline", RangeBaseline.from_dict),
        ("pca_", "pca_baseline", PcaBaseline.from_dict),
    ]
    for prefix, key, load in baselines:
        doc = bundle.metadata.get(key)
        if not doc:
            continue
        base = load(doc)
        s = base.score(x)
        judge(prefix, full, y, s, s > base.threshold, base.threshold)
    if "baseline_f1" in metrics:
        metrics["roc_auc_gain_over_baseline"] = metrics["roc_auc"] - metrics["baseline_roc_auc"]
        metrics["f1_gain_over_baseline"] = metrics["f1"] - metrics["baseline_f1"]
    if "pca_f1" in metrics:
        pca = PcaBaseline.from_dict(bundle.metadata["pca_baseline"])
        metrics["pca_components"] = float(pca.components)
        metrics["roc_auc_gain_over_pca"] = metrics["roc_auc"] - metrics["pca_roc_auc"]
        metrics["f1_gain_over_pca"] = metrics["f1"] - metrics["pca_f1"]
    return metrics, faults


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("far", "FAR"),
    ("mar", "MAR"),
    ("alarm_events_per_entity_day", "alarm events / entity-day"),
    ("false_alarm_events_per_entity_day", "false alarm events / entity-day"),
    ("fault_events_detected", "fault events detected"),
    ("detection_delay_median_readings", "median delay (readings)"),
    ("far_budget_met", "FAR within budget"),
)


def reliability_markdown(metrics: dict[str, float]) -> list[str]:
    """The detectors as rows of one table (the lines of a Markdown section), or none."""
    if "far" not in metrics:
        return []

    def cell(key: str, v: float | None) -> str:
        if v is None or math.isnan(v):
            return "n/a"
        if key == "far_budget_met":
            return "yes" if v else "**no**"
        return f"{v:.3f}"

    budget = metrics.get("max_false_alarm_rate")
    columns = [c for c in _COLUMNS if budget is not None or c[0] != "far_budget_met"]

    lines = [
        "### Alarms",
        "",
        f"{int(metrics.get('eval_fault_events', 0))} labelled fault event(s) over "
        f"{metrics.get('eval_entity_days', math.nan):.2f} entity-day(s). FAR: alarms on "
        "normal rows / normal rows; MAR: missed fault rows / fault rows; events after k-of-n "
        "debouncing; delay in readings from a fault's first row."
        + ("" if budget is None else f" False-alarm budget: FAR <= {budget:g}."),
        "",
        "| detector | " + " | ".join(label for _, label in columns) + " |",
        "| --- " * (len(columns) + 1) + "|",
    ]
    for prefix, name in DETECTORS:
        if f"{prefix}far" in metrics:
            values = [cell(key, metrics.get(prefix + key)) for key, _ in columns]
            lines.append(f"| {name} | " + " | ".join(values) + " |")
    return [*lines, ""]
