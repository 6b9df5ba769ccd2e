"""What each training pipeline step does, as plain functions of files and the run spec.

The KFP components in `loopline.components.training` are thin shells around these: the
shells carry KFP's artifact types, these carry the logic, so they are tested without KFP and
the same code runs under `kfp.local` and on a cluster. Every step attaches to the one MLflow
run of its Loopline run (found by tag, see `loopline.tracking.experiments.ensure_run`), sets
the `loopline.step` tag, reports progress events, and on error marks the run FAILED with the
message before re-raising.

Artifacts between steps:
- features (a folder): `frame.parquet` (the point-in-time training set of the whole window)
  and `meta.json` (the data set's column roles as the feature repository registered them,
  with the feature names of the primary and fallback services; feature views, window, hash);
- model (a folder): the bundle (`loopline.models.bundle`);
- evaluation/comparison: JSON strings (metrics of challenger and champion on the same rows).
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from loopline.components.progress import FAILED, FINISHED, STARTED, report
from loopline.types.dataset import DatasetRoles
from loopline.types.runs import PipelineStep, TrainingRunSpec

log = logging.getLogger(__name__)

EVAL_FRACTION = 0.2  # the newest fifth of each class's rows is the fresh evaluation set
FRAME_FILE = "frame.parquet"
META_FILE = "meta.json"
QUALITY_REPORT_ARTIFACT = "quality/report.json"
QUALITY_REFERENCE_ARTIFACT = "quality/reference_stats.json"
QUALITY_ADVISORY_TAG = "loopline.quality.advisory"  # dimensions that did not gate this run
WINDOW_BASIS_TAG = "loopline.window_basis"  # "since-drift" or "training-window"
SINCE_DRIFT = "since-drift"
TRAINING_WINDOW = "training-window"
REPORT_ARTIFACT_DIR = "reports"

LOAD_FEATURES = PipelineStep.LOAD_FEATURES
VALIDATE_DATA = PipelineStep.VALIDATE_DATA
TRAIN_MODEL = PipelineStep.TRAIN_MODEL
EVALUATE_MODEL = PipelineStep.EVALUATE_MODEL
COMPARE_WITH_CHAMPION = PipelineStep.COMPARE_WITH_CHAMPION
REGISTER_MODEL = PipelineStep.REGISTER_MODEL
STEPS = (
    LOAD_FEATURES,
    VALIDATE_DATA,
    TRAIN_MODEL,
    EVALUATE_MODEL,
    COMPARE_WITH_CHAMPION,
    REGISTER_MODEL,
)


def parse_spec(spec_json: str) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate_json(spec_json)


def client_for_spec(spec: TrainingRunSpec) -> MlflowClient:
    from loopline.tracking.experiments import client_for

    return client_for(spec.mlflow_tracking_uri)


def _mlflow_run(
    client: MlflowClient, spec: TrainingRunSpec, tags: dict[str, str] | None = None
) -> str:
    from loopline.tracking.experiments import ensure_experiment, ensure_run

    experiment = ensure_experiment(client, spec.namespace, spec.model_name)
    return ensure_run(client, experiment, spec.run_id, tags or {})


@contextmanager
def step(name: str, spec: TrainingRunSpec) -> Iterator[dict[str, Any]]:
    """Progress events and MLflow run status around one step's body.

    The body may put fields into the yielded dict; they go into the `finished` event.
    """
    report(name, STARTED, run_id=spec.run_id)
    client: MlflowClient | None = None
    run_id: str | None = None
    out: dict[str, Any] = {}
    try:
        client = client_for_spec(spec)
        run_id = _mlflow_run(client, spec)
        client.set_tag(run_id, "loopline.step", name)
        out["mlflow_run_id"] = run_id
        yield out
    except Exception as exc:
        message = f"{name}: {exc}"
        report(name, FAILED, message=message, mlflow_run_id=run_id, error=type(exc).__name__)
        if client is not None and run_id is not None:
            try:
                client.set_tag(run_id, "loopline.failure", message[:5000])
                client.set_terminated(run_id, status="FAILED")
            except Exception:  # the original error matters more than the bookkeeping
                log.exception("could not mark MLflow run %s failed", run_id)
        raise
    report(name, FINISHED, **out)


# --- load features ---------------------------------------------------------------------------


def resolve_window(spec: TrainingRunSpec, repo: Path) -> tuple[datetime, datetime]:
    """The run's [start, end): the spec's, else the newest `training_window_days` of data."""
    from loopline.data.features import source_window

    end = spec.window_end
    if end is None:
        end = source_window(repo)[1] + timedelta(seconds=1)
    start = spec.window_start or end - timedelta(days=spec.params.training_window_days)
    if start >= end:
        raise ValueError(
            f"windowStart {start.isoformat()} is not before windowEnd {end.isoformat()}"
        )
    return start, end


def drift_window(
    spec: TrainingRunSpec, start: datetime, frame: pd.DataFrame, timestamp: str
) -> tuple[datetime, pd.DataFrame, str]:
    """(start, rows, why) of what a run trains and evaluates on.

    A drift-triggered run keeps only the rows since the drift began when there are at least
    `spec.drift_min_rows` of them. Why: right after a recipe change the new operating point is
    a sliver of a 14-day window; evaluated on the newest fifth, a model trained on the whole
    window learns almost none of it and the gate rejects it, run after run, until the new
    recipe fills a fifth of the window (days). Training from the drift's start lets the first
    retraining learn it, and the reference it logs (what the monitor compares traffic with)
    is the new operating point, not the old one.
    With too few rows since the drift, the whole window is the safer choice: a model fitted and
    gated on a handful of rows proves nothing."""
    drift_start = spec.drift_start
    if drift_start is None or spec.drift_min_rows <= 0:
        return start, frame, TRAINING_WINDOW
    if drift_start.tzinfo is None:
        drift_start = drift_start.replace(tzinfo=UTC)
    since = max(drift_start, start if start.tzinfo is not None else start.replace(tzinfo=UTC))
    recent = frame[frame[timestamp] >= pd.Timestamp(since)]
    if len(recent) < spec.drift_min_rows:
        return (
            start,
            frame,
            f"{TRAINING_WINDOW} ({len(recent)} rows since the drift began at "
            f"{drift_start.isoformat()}, fewer than driftMinRows {spec.drift_min_rows})",
        )
    return since, recent.reset_index(drop=True), SINCE_DRIFT


def _service_features(store: Any, service: str) -> tuple[list[str], list[str]]:
    """Feature names and `view@fingerprint` strings of a Feast feature service."""
    try:
        fs = store.get_feature_service(service)
    except Exception as exc:
        raise ValueError(
            f"feature service {service!r} not found in the feature repo: {exc}"
        ) from exc
    names, views = [], []
    for proj in fs.feature_view_projections:
        feats = [f.name for f in proj.features]
        names += feats
        # Feast has no view versions: a fingerprint of the view's name and feature list
        # says whether two runs read the same definition.
        digest = hashlib.sha256(json.dumps([proj.name, feats]).encode()).hexdigest()[:12]
        views.append(f"{proj.name}@{digest}")
    return names, views


def run_roles(spec: TrainingRunSpec, repo: Path, features: list[str], core: list[str]) -> Any:
    """The column roles of this run: the repository's registered schema, the label the task
    trains on, and the services' feature names. Fails here, at the first step, when the data
    set has no label for the task or the Model names another entity than the data set's."""
    from loopline.data.features import RepoSpec

    schema = RepoSpec.load(repo).data_schema
    if spec.entity_key is not None and spec.entity_key != schema.entity:
        raise ValueError(
            f"entityKey {spec.entity_key!r} is not the entity of the registered data set "
            f"({schema.entity!r}); set entityKey to {schema.entity!r} or leave it out"
        )
    return schema.roles(spec.task, features=features, core_features=core)


def load_features(spec_json: str, out_dir: str) -> dict[str, Any]:
    """Read the window's point-in-time training set from Feast and open the MLflow run."""
    from loopline.data import features as feast_access
    from loopline.tracking.lineage import dataset_hash, lineage_tags
    from loopline.tracking.publish import log_params
    from loopline.tracking.registry import CHAMPION, version_by_alias

    spec = parse_spec(spec_json)
    report(LOAD_FEATURES, STARTED, run_id=spec.run_id)
    try:
        repo = Path(spec.feature_repo)
        start, end = resolve_window(spec, repo)
        store = feast_access.open_store(repo)
        names, views = _service_features(store, spec.feature_service)
        core, core_views = _service_features(store, spec.fallback_feature_service)
        missing = [c for c in core if c not in names]
        if missing:
            raise ValueError(
                f"fallbackFeatureService {spec.fallback_feature_service!r} has features {missing} "
                f"that featureService {spec.feature_service!r} lacks"
            )
        roles = run_roles(spec, repo, names, core)
        frame = feast_access.get_training_frame(
            repo, spec.feature_service, start=start, end=end, store=store
        )
        if frame.empty:
            raise ValueError(
                f"no rows in the window [{start.isoformat()}, {end.isoformat()}) of {repo}"
            )
        if roles.label not in frame.columns:
            raise ValueError(
                f"the training set has no label column {roles.label!r}; its columns are "
                f"{list(frame.columns)}"
            )
        start, frame, basis = drift_window(spec, start, frame, roles.timestamp)
        log.info("run %s trains on %d rows from %s: %s", spec.run_id, len(frame), start, basis)
        folder = Path(out_dir)
        folder.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / FRAME_FILE, index=False)
        data_hash = dataset_hash(frame)
        client = client_for_spec(spec)
        champion = version_by_alias(client, spec.registered_model_name, CHAMPION)
        parent = spec.parent_version or (str(champion.version) if champion else None)
        tags = lineage_tags(
            spec.model_copy(update={"parent_version": parent}),
            data_hash=data_hash,
            data_rows=len(frame),
            feature_views=sorted(set(views + core_views)),
            window_start=start,
            window_end=end,
        )
        tags[WINDOW_BASIS_TAG] = basis
        run_id = _mlflow_run(client, spec, tags)
        for key, value in tags.items():  # a retried step refreshes them
            client.set_tag(run_id, key, value)
        params = spec.params.model_dump(mode="json")
        log_params(
            client,
            run_id,
            {
                **params,
                "task": str(spec.task),
                "eval_fraction": EVAL_FRACTION,
                "metric": spec.validation.metric,
            },
        )
        meta = {
            "roles": roles.model_dump(mode="json"),
            "feature_names": names,
            "core_feature_names": core,
            "feature_views": sorted(set(views + core_views)),
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "window_basis": basis,
            "rows": len(frame),
            "data_hash": data_hash,
            "mlflow_run_id": run_id,
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    except Exception as exc:
        report(LOAD_FEATURES, FAILED, message=f"{LOAD_FEATURES}: {exc}", error=type(exc).__name__)
        raise
    report(LOAD_FEATURES, FINISHED, mlflow_run_id=run_id, rows=len(frame))
    return meta


def read_features(features_dir: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    folder = Path(features_dir)
    return pd.read_parquet(folder / FRAME_FILE), json.loads((folder / META_FILE).read_text())


def roles_of(meta: dict[str, Any]) -> DatasetRoles:
    """The run's column roles, as `load_features` recorded them."""
    return DatasetRoles.model_validate(meta["roles"])


def split(frame: pd.DataFrame, roles: DatasetRoles) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, evaluation): the newest fifth of each label value's rows evaluates (see
    `loopline.models.evaluation_split`)."""
    from loopline.models.evaluation_split import split_per_label

    return split_per_label(frame, roles, EVAL_FRACTION)


# --- validate data ---------------------------------------------------------------------------


def _champion_quality_reference(client: MlflowClient, spec: TrainingRunSpec) -> Any:
    """The champion's training-set statistics, if there is a champion that logged them."""
    from mlflow.artifacts import download_artifacts

    from loopline.data.quality import ReferenceStats
    from loopline.tracking.registry import CHAMPION, version_by_alias

    champion = version_by_alias(client, spec.registered_model_name, CHAMPION)
    if champion is None or not champion.run_id:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = download_artifacts(
                run_id=champion.run_id,
                artifact_path=QUALITY_REFERENCE_ARTIFACT,
                dst_path=tmp,
                tracking_uri=spec.mlflow_tracking_uri,
            )
            return ReferenceStats.load(Path(path))
    except Exception as exc:  # e.g. a champion registered by hand without statistics
        log.warning("champion v%s has no quality reference statistics: %s", champion.version, exc)
        return None


def quality_markdown(report_doc: Any) -> str:
    """The gate's report as Markdown: scores, advisory dimensions, per-feature PSI, failures."""
    from loopline.data.quality import PSI_SHIFTED

    lines = [
        "## Data quality gate",
        "",
        f"**{'passed' if report_doc.passed else 'FAILED'}** on {report_doc.rows} rows: {report_doc.summary}",
        "",
        "| dimension | score | threshold | passed | gates the run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, dim in report_doc.dimensions.items():
        gates = f"no ({dim.note})" if dim.advisory else "yes"
        lines.append(
            f"| {name} | {dim.score:.4f} | {dim.threshold:.4f} | {'yes' if dim.passed else 'no'} "
            f"| {gates} |"
        )
    if report_doc.psi:
        lines += ["", "| feature | PSI | shifted |", "| --- | --- | --- |"]
        for feature, value in report_doc.psi.items():
            shown, shifted = ("n/a", "no values") if value is None else (f"{value:.4f}", "")
            if value is not None:
                shifted = "yes" if value > PSI_SHIFTED else "no"
            lines.append(f"| {feature} | {shown} | {shifted} |")
    if report_doc.failures:
        lines += ["", "| dimension | check | column | observed |", "| --- | --- | --- | --- |"]
        for f in report_doc.failures[:50]:
            dimension = f"{f.dimension} (advisory)" if f.advisory else f.dimension
            lines.append(f"| {dimension} | {f.expectation} | {f.column or ''} | {f.observed} |")
    return "\n".join(lines) + "\n"


def validate_data(spec_json: str, features_dir: str, report_path: str) -> dict[str, Any]:
    """Run the data quality gate; raise with the gate's summary if the training set fails it.

    The run's trigger goes to the gate: in a drift-triggered run distribution is advisory
    (scored, logged and reported, not gating), see `loopline.data.quality.advisory_dimensions`.
    """
    from loopline.data.features import RepoSpec
    from loopline.data.quality import QualityGateError, run_gate
    from loopline.tracking.publish import log_metrics

    spec = parse_spec(spec_json)
    with step(VALIDATE_DATA, spec) as out:
        frame, meta = read_features(features_dir)
        client = client_for_spec(spec)
        run_id = out["mlflow_run_id"]
        schema = RepoSpec.load(Path(spec.feature_repo)).data_schema
        result = run_gate(
            frame,
            schema,
            spec.validation.data_quality,
            reference=_champion_quality_reference(client, spec),
            window_end=datetime.fromisoformat(meta["window_end"]),
            trigger=spec.trigger,
        )
        client.log_text(run_id, result.model_dump_json(indent=2), QUALITY_REPORT_ARTIFACT)
        metrics = {f"dq_{k}": v for k, v in result.scores().items()}
        metrics |= {f"dq_psi_{k}": v for k, v in result.psi.items() if v is not None}
        log_metrics(client, run_id, metrics)
        advisory = result.advisory()
        if advisory:
            client.set_tag(run_id, QUALITY_ADVISORY_TAG, ",".join(advisory))
        markdown = quality_markdown(result)
        Path(report_path).write_text(markdown)
        client.log_text(run_id, markdown, f"{REPORT_ARTIFACT_DIR}/data_quality.md")
        out |= {
            "passed": result.passed,
            "summary": result.summary,
            "scores": result.scores(),
            "advisory": advisory,
        }
        if not result.passed:
            raise QualityGateError(result)
    return out
