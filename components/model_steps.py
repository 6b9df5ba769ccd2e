"""The model half of the training pipeline: train, evaluate, compare with the champion and
register, as plain functions of files and the run spec (the data half, and the step
bookkeeping they share, live in `loopline.components.steps`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from loopline.components.steps import (
    COMPARE_WITH_CHAMPION,
    EVALUATE_MODEL,
    QUALITY_REFERENCE_ARTIFACT,
    REGISTER_MODEL,
    REPORT_ARTIFACT_DIR,
    TRAIN_MODEL,
    client_for_spec,
    parse_spec,
    read_features,
    roles_of,
    split,
    step,
)

log = logging.getLogger(__name__)


# --- train -----------------------------------------------------------------------------------


def train_model(spec_json: str, features_dir: str, model_dir: str) -> dict[str, Any]:
    """Train primary, fallback and baseline on the older part of the window; save the bundle."""
    from loopline.models.training import train_bundle
    from loopline.tracking.publish import log_metrics

    spec = parse_spec(spec_json)
    with step(TRAIN_MODEL, spec) as out:
        frame, meta = read_features(features_dir)
        roles = roles_of(meta)
        train, _ = split(frame, roles)
        # The classes of the whole window: a class whose rows all went to evaluation is still
        # one the model must be able to name.
        trained = train_bundle(
            train,
            spec.task,
            spec.params,
            roles,
            class_names=_window_classes(frame, roles),
            alarms=spec.alarms,
        )
        trained.bundle.metadata |= {
            "run_id": spec.run_id,
            "feature_service": spec.feature_service,
            "fallback_feature_service": spec.fallback_feature_service,
            "window_start": meta["window_start"],
            "window_end": meta["window_end"],
            "data_hash": meta["data_hash"],
        }
        trained.bundle.save(Path(model_dir))
        metrics = {
            "train_seconds": trained.seconds,
            "train_rows": float(trained.rows["primary"]),
            "fallback_train_rows": float(trained.rows["fallback"]),
            "final_loss": trained.history["primary"][-1],
            "fallback_final_loss": trained.history["fallback"][-1],
        }
        log_metrics(client_for_spec(spec), out["mlflow_run_id"], metrics)
        out["metrics"] = metrics
    return out


def _window_classes(frame: Any, roles: Any) -> list[str] | None:
    from loopline.models.training import class_names_of
    from loopline.types.dataset import LabelKind

    return class_names_of(frame, roles) if roles.label_kind == LabelKind.CLASS else None


# --- evaluate --------------------------------------------------------------------------------


def _json_metrics(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: None if math.isnan(v) else v for k, v in metrics.items()}


def _from_json_metrics(metrics: dict[str, float | None]) -> dict[str, float]:
    return {k: math.nan if v is None else float(v) for k, v in metrics.items()}


def evaluate_model(spec_json: str, features_dir: str, model_dir: str, report_path: str) -> str:
    """Metrics of the new model (primary, fallback, baseline) on the fresh evaluation rows."""
    from loopline.models.bundle import ModelBundle
    from loopline.models.evaluation import evaluate_bundle
    from loopline.models.evaluation_split import check_covers
    from loopline.tracking.publish import log_metrics

    spec = parse_spec(spec_json)
    with step(EVALUATE_MODEL, spec) as out:
        frame, meta = read_features(features_dir)
        roles = roles_of(meta)
        _, evaluation_set = split(frame, roles)
        check_covers(frame, evaluation_set, roles)
        bundle = ModelBundle.load_dir(Path(model_dir))
        evaluation = evaluate_bundle(bundle, evaluation_set, roles, spec.alarms)
        client = client_for_spec(spec)
        log_metrics(client, out["mlflow_run_id"], evaluation.metrics)
        markdown = evaluation.markdown("Evaluation of the new model (fresh evaluation set)")
        Path(report_path).write_text(markdown)
        client.log_text(out["mlflow_run_id"], markdown, f"{REPORT_ARTIFACT_DIR}/evaluation.md")
        if evaluation.faults:
            client.log_dict(
                out["mlflow_run_id"], evaluation.faults, f"{REPORT_ARTIFACT_DIR}/fault_events.json"
            )
        if evaluation.confusion:
            client.log_dict(
                out["mlflow_run_id"],
                evaluation.confusion,
                f"{REPORT_ARTIFACT_DIR}/confusion_matrix.json",
            )
        out["metrics"] = _json_metrics(evaluation.metrics)
    return json.dumps(out["metrics"])


# --- compare with champion -------------------------------------------------------------------


def compare_with_champion(
    spec_json: str, features_dir: str, evaluation_json: str, report_path: str
) -> str:
    """Score the current champion on the same evaluation rows and preview the gate."""
    from loopline.models.evaluation_split import check_covers
    from loopline.tracking.champion import score_champion
    from loopline.tracking.gate import decide
    from loopline.tracking.publish import log_metrics

    spec = parse_spec(spec_json)
    with step(COMPARE_WITH_CHAMPION, spec) as out:
        frame, meta = read_features(features_dir)
        roles = roles_of(meta)
        _, evaluation_set = split(frame, roles)
        check_covers(frame, evaluation_set, roles)
        challenger = _from_json_metrics(json.loads(evaluation_json))
        client = client_for_spec(spec)
        champion = score_champion(
            client, spec.registered_model_name, evaluation_set, roles, spec.alarms
        )
        champion_metrics = None if champion is None else champion.evaluation.metrics
        version = None if champion is None else champion.version
        decision = decide(spec.validation, challenger, champion_metrics, champion_version=version)
        metric = spec.validation.metric
        if champion_metrics is not None:
            log_metrics(
                client,
                out["mlflow_run_id"],
                {f"champion_{metric}": champion_metrics.get(metric, math.nan)},
            )
        lines = [
            "## Comparison with the champion (same evaluation set)",
            "",
            f"Champion: {'v' + version if version else 'none yet'}. Gate metric: `{metric}`, "
            f"margin {spec.validation.champion_margin}.",
            "",
            f"Preview of the gate: **{decision.label}**: {decision.reason}",
        ]
        if champion_metrics is not None:
            lines += ["", "| metric | challenger | champion |", "| --- | --- | --- |"]
            for key in sorted(set(challenger) & set(champion_metrics)):
                lines.append(f"| {key} | {challenger[key]:.4f} | {champion_metrics[key]:.4f} |")
        markdown = "\n".join(lines) + "\n"
        Path(report_path).write_text(markdown)
        client.log_text(out["mlflow_run_id"], markdown, f"{REPORT_ARTIFACT_DIR}/comparison.md")
        out["champion_version"] = version
        out["champion_metrics"] = (
            None if champion_metrics is None else _json_metrics(champion_metrics)
        )
        out["preview"] = decision.label
    return json.dumps({"champion_version": version, "champion_metrics": out["champion_metrics"]})


# --- register --------------------------------------------------------------------------------


def register_model(
    spec_json: str, features_dir: str, model_dir: str, evaluation_json: str, comparison_json: str
) -> str:
    """Log the bundle and reference data, register a challenger, apply the champion gate."""
    from loopline.data.features import RepoSpec
    from loopline.data.quality import reference_stats
    from loopline.models.bundle import ModelBundle
    from loopline.models.evaluation_split import normal_rows
    from loopline.tracking.lineage import LINEAGE_TAGS
    from loopline.tracking.publish import publish, reference_rows
    from loopline.types.dataset import LabelKind

    spec = parse_spec(spec_json)
    with step(REGISTER_MODEL, spec) as out:
        frame, meta = read_features(features_dir)
        roles = roles_of(meta)
        train, _ = split(frame, roles)
        bundle = ModelBundle.load_dir(Path(model_dir))
        client = client_for_spec(spec)
        run_id = out["mlflow_run_id"]
        schema = RepoSpec.load(Path(spec.feature_repo)).data_schema
        client.log_text(
            run_id,
            reference_stats(train, schema).model_dump_json(indent=2),
            QUALITY_REFERENCE_ARTIFACT,
        )
        run_tags = client.get_run(run_id).data.tags
        version_tags = {k: run_tags[k] for k in LINEAGE_TAGS if k in run_tags}
        version_tags["loopline.mlflow_run_id"] = run_id
        version_tags |= {
            "loopline.entity": roles.entity,
            "loopline.label": roles.label,
            "loopline.label_kind": str(roles.label_kind),
        }
        comparison = json.loads(comparison_json)
        champion_metrics = comparison.get("champion_metrics")
        metrics = _from_json_metrics(json.loads(evaluation_json))
        published = publish(
            client,
            registered_name=spec.registered_model_name,
            run_id=run_id,
            bundle=bundle,
            metrics=metrics,
            policy=spec.validation,
            champion_metrics=None
            if champion_metrics is None
            else _from_json_metrics(champion_metrics),
            champion_version=comparison.get("champion_version"),
            reference=reference_rows(
                train,
                bundle.feature_names,
                normal=normal_rows(train, roles)
                if roles.label_kind == LabelKind.ANOMALY_FLAG
                else None,
                seed=spec.params.seed,
            ),
            version_tags=version_tags,
            move_champion=spec.move_champion,
        )
        out |= {
            "model_version": published.model_version,
            "gate_passed": published.gate_passed,
            "rejection_reason": None if published.gate_passed else published.decision.reason,
            "gate_reason": published.decision.reason,
            "metrics": _json_metrics(metrics),
        }
    return json.dumps(out)
