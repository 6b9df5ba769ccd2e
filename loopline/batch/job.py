"""One batch scoring run: resolve the version, read in chunks, score, write, register, record.

The MLflow run is opened in the Model's experiment before the first row is read and closed
FINISHED or FAILED, so a run that died halfway is on record too, with what it got to.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from mlflow.tracking import MlflowClient

from loopline.batch.feast_output import register_scores
from loopline.batch.plan import (
    BatchError,
    ModelRef,
    check_window,
    chunk_rows,
    output_file_name,
    output_schema,
    view_name,
)
from loopline.batch.reading import Source, data_span, file_source, iter_chunks, store_source
from loopline.batch.scoring import Tally, score_to_parquet
from loopline.batch.versions import resolve_version
from loopline.data.feature_definitions import RepoSpec
from loopline.models.bundle import ModelBundle, load_bundle
from loopline.tracking.experiments import client_for, ensure_experiment
from loopline.tracking.lineage import (
    CODE_VERSION,
    DATA_HASH,
    DATA_ROWS,
    MODEL,
    NAMESPACE,
    NONE,
    PREFIX,
    WINDOW_END,
    WINDOW_START,
    code_version,
)

BATCH = PREFIX + "batch"
MODEL_VERSION = PREFIX + "model_version"
BATCH_SOURCE = PREFIX + "batch.source"
BATCH_OUTPUT = PREFIX + "batch.output"
BATCH_VIEW = PREFIX + "batch.feature_view"
BATCH_CALLER = PREFIX + "batch.caller"  # who ran it: `loopline usage` counts it per caller
FALLBACK_ROWS = PREFIX + "batch.fallback_rows"
UNSCORED_ROWS = PREFIX + "batch.unscored_rows"
DEFAULT_MEMORY_MIB = 512


@dataclass(frozen=True)
class BatchRequest:
    model: ModelRef
    tracking_uri: str
    repo: Path | None = None  # the feature repository: the rows (unless `input`) and the view
    input: Path | None = None
    start: datetime | None = None
    end: datetime | None = None
    version: str | None = None  # None: the champion
    output: Path | None = None  # a folder; default `<repo>/data/scores/<view>`
    memory_mib: int = DEFAULT_MEMORY_MIB
    # Extra MLflow run tags: a pipeline run's Loopline run id, by which its backend finds it.
    tags: Mapping[str, str] = field(default_factory=dict)
    caller: str = "batch"  # a usage caller label (`batch_caller`)


@dataclass(frozen=True)
class BatchResult:
    version: str
    output: Path
    tally: Tally
    feature_view: str | None
    mlflow_run_id: str
    seconds: float


def _source(req: BatchRequest, bundle: ModelBundle) -> Source:
    features, core, roles = bundle.feature_names, bundle.core_feature_names, bundle.roles
    if req.input is not None:
        entity = roles.entity if roles is not None else None
        timestamp = roles.timestamp if roles is not None else None
        return file_source(req.input, features, core, entity, timestamp)
    if req.repo is None:
        raise BatchError("--repo: give the feature repository to score from, or --input FILE")
    return store_source(req.repo, features, core)


def _output_folder(req: BatchRequest, view: str) -> Path:
    if req.output is not None:
        return req.output
    if req.repo is None:
        raise BatchError(
            "--output: give a folder for the scores (there is no --repo to put them in)"
        )
    return req.repo / "data" / "scores" / view


def _keyed_like(repo: Path, source: Source) -> bool:
    """Whether the scores carry the repository's entity and timestamp columns (a view needs
    them; a user's file may be keyed otherwise, and its scores are then only a file)."""
    schema = RepoSpec.load(repo).data_schema
    return (source.entity, source.timestamp) == (schema.entity, schema.timestamp)


def _iso(value: datetime | None) -> str:
    return NONE if value is None else value.isoformat()


def run_batch(req: BatchRequest) -> BatchResult:
    check_window(req.start, req.end)
    client = client_for(req.tracking_uri)
    name = req.model.registered_name
    version = resolve_version(client, name, req.version)
    bundle = load_bundle(f"models:/{name}/{version}", tracking_uri=req.tracking_uri)
    source = _source(req, bundle)
    rows = chunk_rows(len(source.columns) + len(source.rolling_features), req.memory_mib * 2**20)
    schema = output_schema(bundle, source.key_fields())
    view = view_name(req.model)
    out_path = _output_folder(req, view) / output_file_name(version, req.start, req.end)
    experiment = ensure_experiment(client, req.model.namespace, req.model.name)
    run = client.create_run(
        experiment,
        run_name=f"batch-v{version}-{int(time.time())}",
        tags={
            BATCH: "true",
            NAMESPACE: req.model.namespace,
            MODEL: req.model.name,
            MODEL_VERSION: version,
            BATCH_CALLER: req.caller,
            WINDOW_START: _iso(req.start),
            WINDOW_END: _iso(req.end),
            BATCH_SOURCE: source.description,
            BATCH_OUTPUT: str(out_path),
            CODE_VERSION: code_version(),
            **req.tags,
        },
    )
    run_id = str(run.info.run_id)
    began = time.perf_counter()
    try:
        result = _score(req, client, run_id, bundle, source, rows, schema, version, out_path, view)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return BatchResult(version, out_path, result[0], result[1], run_id, time.perf_counter() - began)


def _score(
    req: BatchRequest,
    client: MlflowClient,
    run_id: str,
    bundle: ModelBundle,
    source: Source,
    rows: int,
    schema: pa.Schema,
    version: str,
    out_path: Path,
    view: str,
) -> tuple[Tally, str | None]:
    began = time.perf_counter()
    chunks = iter_chunks(source, req.start, req.end, rows)
    tally = score_to_parquet(bundle, chunks, source.keys, schema, version, out_path)
    if tally.rows == 0:
        raise BatchError(
            f"--start/--end: the window [{_iso(req.start)}, {_iso(req.end)}) holds no rows of "
            f"{source.description}; {data_span(source)}"
        )
    seconds = time.perf_counter() - began
    registered = None
    if req.repo is not None and _keyed_like(req.repo, source):
        registered = register_scores(req.repo, view, out_path.parent, schema, source.keys)
    tags = {
        DATA_HASH: tally.input_hash,
        DATA_ROWS: str(tally.rows),
        FALLBACK_ROWS: str(tally.fallback_rows),
        UNSCORED_ROWS: str(tally.unscored_rows),
        BATCH_VIEW: registered or NONE,
    }
    for key, tag in tags.items():
        client.set_tag(run_id, key, tag)
    metrics = {
        "batch_rows": float(tally.rows),
        "batch_chunks": float(tally.chunks),
        "batch_fallback_share": tally.fallback_rows / tally.rows,
        "batch_unscored_share": tally.unscored_rows / tally.rows,
        "batch_rows_per_second": tally.rows / max(seconds, 1e-9),
    }
    if tally.flagged_rows is not None:
        metrics["batch_anomaly_share"] = tally.flagged_rows / tally.rows
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    return tally, registered
