"""Experiments and runs: one experiment per Model resource, one run per training.

Runs are found by their Loopline run id tag rather than passed around, so every pipeline step
(a separate process, possibly a retried pod) attaches to the same MLflow run idempotently.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from loopline.tracking.lineage import MODEL, NAMESPACE, RUN_ID


def client_for(tracking_uri: str) -> MlflowClient:
    """A client whose registry is the tracking store (MLflow would otherwise consult globals)."""
    prepare_local_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def using_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's fluent API (needed by `log_model`) pointed at a URI, restored afterwards.

    Uses MLflow's own private helper because the public `set_tracking_uri` cannot restore an
    unset URI; a test or a server process must not be left pointing at another store.
    """
    with _use_tracking_uri(tracking_uri):
        yield


def experiment_name(namespace: str, model_name: str) -> str:
    return f"loopline/{namespace}/{model_name}"


def local_artifact_root(tracking_uri: str) -> str | None:
    """For a SQLite tracking URI: an `artifacts/` folder beside the database.

    MLflow's own default for SQLite is `./mlruns` relative to the working directory, which
    scatters artifacts wherever a process happened to start.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db_path.is_absolute():
        db_path = Path.cwd() / db_path
    return (db_path.parent / "artifacts").as_uri()


def prepare_local_store(tracking_uri: str) -> None:
    """Create the folder of a SQLite tracking database (MLflow does not)."""
    if urlparse(tracking_uri).scheme == "sqlite":
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def ensure_experiment(client: MlflowClient, namespace: str, model_name: str) -> str:
    """The id of the Model's experiment, created on first use."""
    name = experiment_name(namespace, model_name)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    root = local_artifact_root(client.tracking_uri)
    location = f"{root}/{namespace}/{model_name}" if root else None
    return str(
        client.create_experiment(
            name, artifact_location=location, tags={NAMESPACE: namespace, MODEL: model_name}
        )
    )


def find_run(client: MlflowClient, experiment_id: str, loopline_run_id: str) -> Run | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_ID}` = '{loopline_run_id}'", max_results=2
    )
    return runs[0] if runs else None


def ensure_run(
    client: MlflowClient, experiment_id: str, loopline_run_id: str, tags: dict[str, str]
) -> str:
    """The MLflow run id of a Loopline run, created (named after it) on first use."""
    run = find_run(client, experiment_id, loopline_run_id)
    if run is not None:
        return str(run.info.run_id)
    created = client.create_run(
        experiment_id, run_name=loopline_run_id, tags={**tags, RUN_ID: loopline_run_id}
    )
    return str(created.info.run_id)
