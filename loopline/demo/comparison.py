"""Both model versions scored on the same fresh data, and the registry's view of them, for the
report: the claim "the new champion is better" is measured, not assumed."""

from __future__ import annotations

from loopline.data.generator import Manifest, live_traffic
from loopline.demo.record import Comparison, DemoRecord, VersionInfo

KEPT_METRICS = ("f1", "roc_auc", "precision", "recall", "alarm_rate")


def score_versions(
    versions: list[str],
    registered_model: str,
    tracking_uri: str,
    manifest: Manifest,
    interval_seconds: float,
) -> Comparison:
    """Score each version on one fresh batch of post-change traffic (never seen by either)."""
    from loopline.models.bundle import load_bundle
    from loopline.models.evaluation import evaluate_bundle

    frame, _ = live_traffic(
        manifest,
        minutes=interval_seconds / 60 * 300,
        fault_fraction=0.05,
        sensor_faults_per_day=0.0,
    )
    metrics: dict[str, dict[str, float]] = {}
    for version in versions:
        bundle = load_bundle(f"models:/{registered_model}/{version}", tracking_uri=tracking_uri)
        evaluation = evaluate_bundle(bundle, frame)
        metrics[version] = {
            k: evaluation.metrics[k] for k in KEPT_METRICS if k in evaluation.metrics
        }
    return Comparison(
        dataset="fresh data after the recipe change", rows=len(frame), metrics=metrics
    )


def record_versions(record: DemoRecord, registered_model: str, tracking_uri: str) -> None:
    """Every registered version with its aliases, run metrics and lineage tags."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for mv in client.search_model_versions(f"name='{registered_model}'"):
        run = client.get_run(mv.run_id) if mv.run_id else None
        record.upsert_version(
            VersionInfo(
                version=str(mv.version),
                aliases=list(getattr(mv, "aliases", []) or []),
                run_id=mv.run_id or "",
                metrics=dict(run.data.metrics) if run else {},
                tags={
                    k: v
                    for k, v in (run.data.tags if run else {}).items()
                    if not k.startswith("mlflow.")
                },
            )
        )
