"""The `kubernetes` pipeline backend on a real containerd node: a real training run as a Job.

What is real: the training image (`loopline images build`: the runtime image plus the torch
layer, built here when its tag is not in podman's store), pushed to the cluster's registry
with `loopline images push` and pulled by the node's containerd; the Job and its pod, run by
the real kubelet and runc; torch training inside the pod (kfp.local's runner, the steps run warm
in its process, as in production); a Feast repository over generated data on a PersistentVolume
(the local cluster's hostPath StorageClass), applied by a pod at the path training pods mount
it on, as the backend requires; an MLflow server on this host, bound to the node's address,
where the run registers its model version. The backend reads the run's result back from the
pod's termination message.

Then a restart: while the Job runs, a second backend instance (what a restarted operator
builds, with nothing in memory) submits the same run id; it adopts the Job, and the run still
has exactly one Job.

The data set is small (3 machines x 8 days at 5-minute readings) and training short (5
epochs), so once the image is on the node the run takes a few minutes. A cold first build of
the image takes longer: docs/images.md says how long.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from loopline.images import inputs
from loopline.images.runner import Images
from loopline.operators.backends.kube_jobs import FEATURE_REPO_CLAIM, JobPipelineBackend
from loopline.operators.builders.kube_jobs import FEATURE_REPO_MOUNT, run_selector
from loopline.operators.settings import OperatorSettings
from loopline.settings import get_settings
from loopline.tracking.lineage import RUN_ID
from loopline.types.common import Task, Trigger
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from tests.fixtures.cluster import wait_for
from tests.realnode.conftest import RealNode
from tests.realnode.test_serving_on_node import mlflow_url  # noqa: F401 (a fixture)

_MISSING = [tool for tool in ("podman", "mmdebstrap", "skopeo") if shutil.which(tool) is None]
if os.geteuid() != 0:
    pytest.skip("building the training image needs root (podman's store)", allow_module_level=True)
if _MISSING:
    pytest.skip(
        f"{', '.join(_MISSING)} not installed: apt-get install {' '.join(_MISSING)} "
        "(scripts/install-system-deps.sh)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(5400)]

MODEL = "drill-ae"
PARAMS = {"epochs": 5, "seed": 0, "trainingWindowDays": 30}
# As tests/integration/test_training_pipeline.py: 6912 rows, faults in the newest fifth too.
SEED_SCRIPT = f"""
import os, subprocess
from pathlib import Path
from loopline.data import features
from loopline.data.generator import GeneratorConfig, generate, write_dataset
from loopline.data.schema import factory_schema

repo = Path("{FEATURE_REPO_MOUNT}")
frame, manifest = generate(
    GeneratorConfig(machines=3, days=8, interval_seconds=300, seed=2, fault_fraction=0.08)
)
write_dataset(frame, manifest, repo / "source")
features.create_repo(repo, repo / "source" / "sensors.parquet", factory_schema())
features.apply(repo)
subprocess.run(["chown", "-R", "10001:10001", str(repo)], check=True)
print("seeded", sorted(os.listdir(repo)))
"""


@pytest.fixture(scope="module")
def training_image(realnode_session: RealNode) -> str:
    """The training image of this checkout in the cluster's registry (built first unless its
    content tag is in the store: the runtime image, the torch layer, the composition)."""
    images = Images(inputs.repo_root(), get_settings().cache_dir, echo=print)
    started = time.monotonic()
    (built,) = images.build(("training",))
    print(f"{built.plan.reference}: {built.action} in {time.monotonic() - started:.0f} s")
    started = time.monotonic()
    pushed = images.push(realnode_session.registry, ("training",))
    print(f"pushed {pushed} in {time.monotonic() - started:.0f} s")
    return next(ref for ref in pushed if ref.endswith(built.plan.tag))


@pytest.fixture
def kube_api(realnode: RealNode) -> Iterator[k8s.ApiClient]:
    api = k8s_config.new_client_from_config(config_file=str(realnode.local.kubeconfig_path))
    try:
        yield api
    finally:
        api.close()


def _seed_feature_repo(realnode: RealNode, ns: str, image: str) -> None:
    """The claim the backend mounts, holding a Feast repository applied at the mount path."""
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": FEATURE_REPO_CLAIM, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    # Root for the seeding only (a fresh hostPath volume is root's); it hands the repository
    # to the pods' user 10001.
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "seed-feature-repo", "namespace": ns},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "seed",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-c", SEED_SCRIPT],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": {"runAsUser": 0, "runAsGroup": 0},
                    "volumeMounts": [{"name": "repo", "mountPath": FEATURE_REPO_MOUNT}],
                }
            ],
            "volumes": [
                {"name": "repo", "persistentVolumeClaim": {"claimName": FEATURE_REPO_CLAIM}}
            ],
        },
    }
    realnode.apply(claim, pod)
    started = time.monotonic()
    done = realnode.kubectl(
        "wait",
        f"--namespace={ns}",
        "--for=jsonpath={.status.phase}=Succeeded",
        "pod/seed-feature-repo",
        "--timeout=1500s",  # the first pull of the training image
        check=False,
        timeout=1560,
    )
    logs = realnode.kubectl("logs", f"--namespace={ns}", "seed-feature-repo", check=False)
    if done.returncode != 0:
        described = realnode.kubectl("describe", f"--namespace={ns}", "pod/seed-feature-repo")
        pytest.fail(f"seeding failed: {logs.stdout[-3000:]}\n{described.stdout[-3000:]}")
    print(f"feature repository seeded in {time.monotonic() - started:.0f} s: {logs.stdout}")


def _spec(ns: str) -> TrainingRunSpec:
    digest = hashlib.sha256(f"{ns}/training-on-node".encode()).hexdigest()[:12]
    return TrainingRunSpec.model_validate(
        {
            "runId": f"{MODEL}-{digest}",
            "namespace": ns,
            "modelName": MODEL,
            "task": Task.ANOMALY_DETECTION,
            "trigger": Trigger.MANUAL,
            "featureService": "all_sensors",
            "registeredModelName": f"{ns}.{MODEL}",
            # What the operator's own MLflow client uses; the Job gets the cluster's address.
            "mlflowTrackingUri": "http://127.0.0.1:1",
            "featureRepo": "/not/on/the/node",
            "params": PARAMS,
            "validation": {"metric": "roc_auc"},
        }
    )


def _job_names(api: k8s.ApiClient, ns: str, run_id: str) -> list[str]:
    jobs = k8s.BatchV1Api(api).list_namespaced_job(ns, label_selector=run_selector(run_id))
    return [job.metadata.name for job in jobs.items]


def _describe(realnode: RealNode, ns: str, run_id: str) -> str:
    pods = realnode.kubectl("describe", "pods", f"--namespace={ns}", check=False).stdout
    logs = realnode.kubectl(
        "logs", f"job/{run_id}", f"--namespace={ns}", "--tail=80", check=False
    ).stdout
    return f"{pods[-4000:]}\n--- logs ---\n{logs}"


def test_a_training_run_is_a_job_on_the_node_and_survives_a_restarted_operator(
    realnode: RealNode,
    node_namespace: str,
    training_image: str,
    mlflow_url: str,  # noqa: F811
    kube_api: k8s.ApiClient,
) -> None:
    ns = node_namespace
    _seed_feature_repo(realnode, ns, training_image)
    settings = OperatorSettings(
        pipeline_backend="kubernetes",
        training_image=training_image,
        cluster_tracking_uri=mlflow_url,
        training_deadline_seconds=1800,
    )
    backend = JobPipelineBackend(settings, api=kube_api)
    spec = _spec(ns)
    started = time.monotonic()
    assert backend.submit(spec) == spec.run_id

    def running() -> TrainingRunResult | None:
        result = backend.status(spec.run_id)
        assert result is not None, "the Job is gone"
        assert result.phase not in (RunPhase.FAILED, RunPhase.CANCELLED), (
            f"{result.message}\n{_describe(realnode, ns, spec.run_id)}"
        )
        return result if result.phase is RunPhase.RUNNING else None

    wait_for(running, timeout=600, interval=2, what="the training pod running")
    print(f"training pod running after {time.monotonic() - started:.0f} s")

    # A restarted operator: a new backend, nothing in memory, the same run submitted again.
    restarted = JobPipelineBackend(settings, api=kube_api)
    seen = restarted.status(spec.run_id)  # found by its label
    assert seen is not None
    assert seen.phase in (RunPhase.RUNNING, RunPhase.SUCCEEDED)
    assert restarted.submit(spec) == spec.run_id
    assert _job_names(kube_api, ns, spec.run_id) == [spec.run_id]

    def finished() -> TrainingRunResult | None:
        result = restarted.status(spec.run_id)
        assert result is not None, "the Job is gone"
        done = result.phase in (RunPhase.SUCCEEDED, RunPhase.FAILED, RunPhase.CANCELLED)
        return result if done else None

    result = wait_for(finished, timeout=1500, interval=5, what="the training run's end")
    print(f"run finished after {time.monotonic() - started:.0f} s: {result.message}")
    assert result.phase is RunPhase.SUCCEEDED, (
        f"{result.message}\n{_describe(realnode, ns, spec.run_id)}"
    )
    assert result.run_id == spec.run_id
    assert result.model_version, result
    assert backend.status(spec.run_id) == result, "both instances read the same result"
    assert _job_names(kube_api, ns, spec.run_id) == [spec.run_id]
    pods = realnode.kubectl(
        "get", "pods", f"--namespace={ns}", f"--selector={run_selector(spec.run_id)}", "-o", "name"
    ).stdout.split()
    assert len(pods) == 1, pods

    # The model version the run registered, as the host's MLflow server has it.
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    version = client.get_model_version(spec.registered_model_name, result.model_version)
    assert version.status == "READY"
    assert version.run_id is not None
    run = client.get_run(version.run_id)
    assert run.data.tags.get(RUN_ID) == spec.run_id, run.data.tags
    if result.gate_passed:
        champion = client.get_model_version_by_alias(spec.registered_model_name, "champion")
        assert champion.version == result.model_version
