"""A training run as a Kubernetes Job, and the Job read back as a `TrainingRunResult` (pure).

One run is one Job named after the run id (a DNS label), with one pod and one container that
runs the pipeline the way the local backend's worker does (`python -m loopline.pipelines.run`,
kfp.local's subprocess runner inside the pod). How the pieces travel, and why:

- The spec goes in as an annotation of the pod template, which a downward API volume mounts as
  the file the runner reads: it lives and dies with the Job (no ConfigMap to clean up), it is
  readable with `kubectl get job -o yaml`, and the runner keeps its `--spec FILE` interface.
- The result comes back as the container's termination message (read by
  `operators.builders.kube_job_results`): the runner writes the final `TrainingRunResult`,
  compacted to the kubelet's 4 KB limit, to `/dev/termination-log`, and
  the kubelet copies it into the pod's status. The pod needs no API credentials and no
  permission to patch anything (the alternative, progress as pod annotations, would need
  both), and the operator needs no shared disk. The price: the step in progress is not
  visible while the run is going, only the final result (and `kubectl logs`).
  `FallbackToLogsOnError` puts the log's tail there when the runner dies before writing it
  (an unreadable spec, an import error), so a crash still explains itself.
- The Feast repository comes from a PersistentVolumeClaim in the Model's namespace, mounted
  read-only at `FEATURE_REPO_MOUNT`, and the spec's `featureRepo` points there. It holds
  `feature_store.yaml`, `repo.json`, `definitions.py` and, with the file stores, `data/`.
  Feast's registry records the sources' absolute paths, so the repository must have been
  applied (`loopline data register --repo ...`) at that same path, i.e. from a pod mounting
  the claim there. With a Redis/Postgres configuration the volume holds only the
  configuration and definitions; the stores' credentials come from the optional `env_secret`.
- kfp.local's working directories, HOME and the caches go to an emptyDir on /tmp; the root
  filesystem stays read-only.
- A batch-scoring run (`BatchRunSpec`) is the same Job, labelled `batch-scoring`, from
  `batch_image` (the runtime image: bundles score without torch) and with the repository's
  claim mounted read-write, because its scores and their feature view are written there.

The operator decides about retries, so `backoffLimit` is 0; a finished Job stays
`ttl_seconds` (three days) so a stopped operator can still read the result when it returns.
A Job that is gone reads as an unknown run, which the operator submits again under the same id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loopline.operators.builders.auth import MANAGED_BY, MODEL_LABEL
from loopline.types.batch import BatchRunSpec, RunSpec

COMPONENT_LABEL = "loopline.dev/component"
COMPONENT = "training"
BATCH_COMPONENT = "batch-scoring"  # a batch-scoring run's Job (`BatchRunSpec`)
_RUN_COMPONENTS = f"{COMPONENT_LABEL} in ({COMPONENT},{BATCH_COMPONENT})"
RUN_ID_LABEL = "loopline.dev/run-id"
SPEC_ANNOTATION = "loopline.dev/run-spec"
CONTAINER = "train"

SPEC_DIR = "/etc/loopline/run"
SPEC_FILE = "spec.json"
WORK_DIR = "/tmp"
RUN_DIR = f"{WORK_DIR}/run"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
FEATURE_REPO_MOUNT = "/var/lib/loopline/feature-repo"

TTL_SECONDS = 3 * 24 * 3600
UID = 10001
# Training is torch on one intra-op thread (docs/training.md) while kfp.local runs the steps
# one after another: one core, and memory for torch, pandas and a window of a few million
# values; the limit leaves room for the evaluation's copies of the frame.
RESOURCES: dict[str, dict[str, str]] = {
    "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "6Gi"},
}
WORK_SIZE = "4Gi"  # the emptyDir: the window's parquet, the model bundle, reports

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# The API server's limit on all annotations of an object together is 256 KiB.
_SPEC_MAX = 200 * 1024


@dataclass(frozen=True)
class JobConfig:
    """What every training Job of one operator shares (from its settings)."""

    image: str
    tracking_uri: str
    # Batch-scoring Jobs: the runtime image (bundles score with numpy; no torch needed).
    # None: `image`, the training image, which scores as well.
    batch_image: str | None = None
    image_pull_policy: str = "IfNotPresent"
    feature_claim: str | None = None  # None: the image's own repository (no data in it)
    env_secret: str | None = None  # optional Secret in the Model's namespace, as env
    deadline_seconds: int | None = None
    ttl_seconds: int = TTL_SECONDS
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=lambda: RESOURCES)


def component_of(spec: RunSpec) -> str:
    return BATCH_COMPONENT if isinstance(spec, BatchRunSpec) else COMPONENT


def labels(model: str, run_id: str = "", component: str = COMPONENT) -> dict[str, str]:
    found = {**MANAGED_BY, MODEL_LABEL: model, COMPONENT_LABEL: component}
    return {**found, RUN_ID_LABEL: run_id} if run_id else found


def model_selector(model: str) -> str:
    """A Model's run Jobs, training and batch scoring."""
    found = {**MANAGED_BY, MODEL_LABEL: model}
    return ",".join([*(f"{k}={v}" for k, v in found.items()), _RUN_COMPONENTS])


def run_selector(run_id: str) -> str:
    return f"{RUN_ID_LABEL}={run_id},{_RUN_COMPONENTS}"


def logs_hint(namespace: str, run_id: str) -> str:
    return f"kubectl logs job/{run_id} -n {namespace}"


def pod_spec_of(spec: RunSpec, config: JobConfig) -> RunSpec:
    """The spec as the pod must see it: MLflow as pods reach it, the mounted Feast repo."""
    update: dict[str, Any] = {"mlflow_tracking_uri": config.tracking_uri}
    if config.feature_claim:
        update["feature_repo"] = FEATURE_REPO_MOUNT
    return spec.model_copy(update=update)


def build_training_job(spec: RunSpec, config: JobConfig) -> dict[str, Any]:
    """The batch/v1 Job of one pipeline run (training, or batch scoring from `batch_image`)."""
    for what, value in (("run id", spec.run_id), ("model name", spec.model_name)):
        if not _DNS_LABEL.match(value):
            raise ValueError(
                f"{what} {value!r} is not a DNS label (lowercase letters, digits and '-', "
                "at most 63 characters): it names the training Job and labels its pod"
            )
    if not config.image:
        raise ValueError("no training image: set LOOPLINE_OPERATOR_TRAINING_IMAGE")
    if not config.tracking_uri:
        raise ValueError(
            "no MLflow tracking URI for training pods: set "
            "LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI to MLflow's address as pods reach it"
        )
    spec_json = pod_spec_of(spec, config).model_dump_json(by_alias=True)
    if len(spec_json) > _SPEC_MAX:
        raise ValueError(f"run spec of {spec.run_id} is {len(spec_json)} bytes: too large")
    run_labels = labels(spec.model_name, spec.run_id, component_of(spec))
    image = config.image
    if isinstance(spec, BatchRunSpec) and config.batch_image:
        image = config.batch_image
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": config.ttl_seconds,
        "template": {
            "metadata": {"labels": run_labels, "annotations": {SPEC_ANNOTATION: spec_json}},
            # A batch run writes its scores and their feature view into the repository.
            "spec": _pod_spec(config, image, repo_writable=isinstance(spec, BatchRunSpec)),
        },
    }
    if config.deadline_seconds:
        job_spec["activeDeadlineSeconds"] = config.deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.run_id, "namespace": spec.namespace, "labels": run_labels},
        "spec": job_spec,
    }


def _pod_spec(config: JobConfig, image: str, *, repo_writable: bool = False) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"name": "run-spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "work", "mountPath": WORK_DIR},
    ]
    volumes: list[dict[str, Any]] = [
        {
            "name": "run-spec",
            "downwardAPI": {
                "items": [
                    {
                        "path": SPEC_FILE,
                        "fieldRef": {"fieldPath": f"metadata.annotations['{SPEC_ANNOTATION}']"},
                    }
                ]
            },
        },
        {"name": "work", "emptyDir": {"sizeLimit": WORK_SIZE}},
    ]
    if config.feature_claim:
        read_only = not repo_writable
        mounts.append(
            {"name": "feature-repo", "mountPath": FEATURE_REPO_MOUNT, "readOnly": read_only}
        )
        volumes.append(
            {
                "name": "feature-repo",
                "persistentVolumeClaim": {"claimName": config.feature_claim, "readOnly": read_only},
            }
        )
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": config.tracking_uri},
        {"name": "HOME", "value": WORK_DIR},
        {"name": "TMPDIR", "value": WORK_DIR},
        {"name": "LOOPLINE_CACHE_DIR", "value": f"{WORK_DIR}/loopline-cache"},
        {"name": "LOOPLINE_STATE_DIR", "value": f"{WORK_DIR}/loopline-state"},
    ]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": ["python", "-m", "loopline.pipelines.run"],
        "args": [
            "--spec",
            f"{SPEC_DIR}/{SPEC_FILE}",
            "--result",
            f"{RUN_DIR}/result.json",
            "--workdir",
            RUN_DIR,
            "--termination-message",
            TERMINATION_MESSAGE_PATH,
        ],
        "env": env,
        "resources": {k: dict(v) for k, v in config.resources.items()},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if config.env_secret:
        container["envFrom"] = [{"secretRef": {"name": config.env_secret, "optional": True}}]
    return {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
