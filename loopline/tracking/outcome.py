"""What a finished training run amounts to, read back from MLflow by its Loopline run id.

The `kfp` backend sees only KFP's task states; the outcome (which version, passed the gate or
why not, metrics) is in MLflow, tagged with the Loopline run id. Reading it from there gives both
backends the same `TrainingRunResult` fields without parsing KFP's output artifacts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopline.tracking.experiments import client_for, experiment_name, find_run
from loopline.tracking.gate import GATE_REJECTED, gate_passed
from loopline.tracking.lineage import DATA_ROWS, GATE_DECISION, GATE_REASON, PREFIX

# The tags `loopline.batch.job` writes (not imported from there: it loads pyarrow and Feast).
MODEL_VERSION = PREFIX + "model_version"
BATCH_OUTPUT = PREFIX + "batch.output"


@dataclass(frozen=True)
class RunOutcome:
    mlflow_run_id: str | None = None
    model_version: str | None = None
    gate_passed: bool = False
    rejection_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def run_outcome(
    tracking_uri: str, namespace: str, model_name: str, registered_name: str, loopline_run_id: str
) -> RunOutcome:
    """The MLflow side of a Loopline run; empty if the run never reached MLflow."""
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(namespace, model_name))
    if experiment is None:
        return RunOutcome()
    run = find_run(client, str(experiment.experiment_id), loopline_run_id)
    if run is None:
        return RunOutcome()
    run_id = str(run.info.run_id)
    versions = client.search_model_versions(f"name = '{registered_name}' and run_id = '{run_id}'")
    tags = run.data.tags
    decision = tags.get(GATE_DECISION)
    return RunOutcome(
        mlflow_run_id=run_id,
        model_version=str(versions[0].version) if versions else None,
        gate_passed=gate_passed(decision),
        rejection_reason=tags.get(GATE_REASON) if decision == GATE_REJECTED else None,
        metrics=dict(run.data.metrics),
    )


def batch_outcome(
    tracking_uri: str, namespace: str, model_name: str, loopline_run_id: str
) -> dict[str, Any]:
    """A batch-scoring run's result fields (MLflow run, the version that scored, metrics):
    batch runs register no version, so the version is the run's `loopline.model_version` tag."""
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name(namespace, model_name))
    run = (
        None
        if experiment is None
        else find_run(client, str(experiment.experiment_id), loopline_run_id)
    )
    if run is None:
        return {}
    tags = run.data.tags
    rows = tags.get(DATA_ROWS)
    return {
        "mlflow_run_id": str(run.info.run_id),
        "model_version": tags.get(MODEL_VERSION),
        "metrics": dict(run.data.metrics),
        "message": f"scored {rows} rows -> {tags.get(BATCH_OUTPUT, '?')}" if rows else "",
    }
