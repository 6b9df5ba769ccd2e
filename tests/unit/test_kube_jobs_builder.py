"""The training Job a run becomes (operators.builders.kube_jobs.build_training_job)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from loopline.operators.builders.kube_jobs import (
    FEATURE_REPO_MOUNT,
    SPEC_ANNOTATION,
    TERMINATION_MESSAGE_PATH,
    TTL_SECONDS,
    JobConfig,
    build_training_job,
    model_selector,
    run_selector,
)
from loopline.types.batch import BatchRunSpec, parse_run_spec
from loopline.types.common import Task, Trigger
from loopline.types.runs import TrainingRunSpec

SPEC = TrainingRunSpec(
    run_id="drill-ae-0123456789ab",
    namespace="plant",
    model_name="drill-ae",
    task=Task.ANOMALY_DETECTION,
    trigger=Trigger.DRIFT,
    feature_service="all_sensors",
    registered_model_name="plant.drill-ae",
    mlflow_tracking_uri="http://127.0.0.1:5000",
    feature_repo="/home/op/feature_repo",
)
CONFIG = JobConfig(
    image="registry.local/loopline/training:0.1.0",
    tracking_uri="http://mlflow.loopline-system.svc:5000",
    feature_claim="loopline-feature-repo",
    env_secret="loopline-training-env",
    deadline_seconds=3600,
)


def _container(job: dict[str, Any]) -> dict[str, Any]:
    containers = job["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _matches(selector: str, found: dict[str, str]) -> bool:
    """Whether labels satisfy a selector of `k=v` and `k in (a,b)` terms (as the API server
    reads them)."""
    terms = re.findall(r"[^,(]+(?:\([^)]*\))?", selector)
    for term in terms:
        key, _, values = term.partition(" in ")
        if values:
            if found.get(key) not in values.strip("()").split(","):
                return False
        else:
            key, _, value = term.partition("=")
            if found.get(key) != value:
                return False
    return bool(terms)


def test_job_is_named_after_the_run_and_labelled_for_model_and_run() -> None:
    job = build_training_job(SPEC, CONFIG)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == SPEC.run_id
    assert job["metadata"]["namespace"] == "plant"
    expected = {
        "app.kubernetes.io/managed-by": "loopline",
        "loopline.dev/model": "drill-ae",
        "loopline.dev/component": "training",
        "loopline.dev/run-id": SPEC.run_id,
    }
    assert job["metadata"]["labels"] == expected
    assert job["spec"]["template"]["metadata"]["labels"] == expected
    # The selectors the backend lists by match these labels.
    for selector in (model_selector("drill-ae"), run_selector(SPEC.run_id)):
        assert _matches(selector, expected)
    assert not _matches(run_selector(SPEC.run_id), {**expected, "loopline.dev/component": "x"})
    assert not _matches(model_selector("other"), expected)


def test_spec_travels_as_an_annotation_mounted_by_the_downward_api() -> None:
    job = build_training_job(SPEC, CONFIG)
    template = job["spec"]["template"]
    carried = TrainingRunSpec.model_validate_json(
        template["metadata"]["annotations"][SPEC_ANNOTATION]
    )
    # As the pod sees things: MLflow at the cluster address, Feast at the mounted claim.
    assert carried.mlflow_tracking_uri == CONFIG.tracking_uri
    assert carried.feature_repo == FEATURE_REPO_MOUNT
    assert carried.model_dump(exclude={"mlflow_tracking_uri", "feature_repo"}) == SPEC.model_dump(
        exclude={"mlflow_tracking_uri", "feature_repo"}
    )
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    item = volumes["run-spec"]["downwardAPI"]["items"][0]
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{SPEC_ANNOTATION}']"
    container = _container(job)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    spec_file = f"{mounts['run-spec']['mountPath']}/{item['path']}"
    args = container["args"]
    assert args[args.index("--spec") + 1] == spec_file
    assert container["command"] == ["python", "-m", "loopline.pipelines.run"]


def test_result_comes_back_through_the_termination_message() -> None:
    container = _container(build_training_job(SPEC, CONFIG))
    assert container["terminationMessagePath"] == TERMINATION_MESSAGE_PATH
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    args = container["args"]
    assert args[args.index("--termination-message") + 1] == TERMINATION_MESSAGE_PATH
    # The runner's own files go to the writable emptyDir, not the read-only root.
    work = next(m for m in container["volumeMounts"] if m["name"] == "work")["mountPath"]
    assert args[args.index("--result") + 1].startswith(work + "/")
    assert args[args.index("--workdir") + 1].startswith(work + "/")


def test_pod_is_locked_down_with_writable_scratch_only() -> None:
    job = build_training_job(SPEC, CONFIG)
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = _container(job)
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert [m["name"] for m in writable] == ["work"]
    assert "emptyDir" in volumes["work"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    for name in ("HOME", "TMPDIR", "LOOPLINE_CACHE_DIR", "LOOPLINE_STATE_DIR"):
        assert env[name].startswith(writable[0]["mountPath"]), name
    assert env["MLFLOW_TRACKING_URI"] == CONFIG.tracking_uri
    resources = container["resources"]
    assert resources["requests"]["cpu"] == "1"  # torch on one thread, steps one at a time
    assert set(resources["limits"]) >= {"memory", "ephemeral-storage"}


def test_feature_repo_claim_is_mounted_read_only_and_optional() -> None:
    pod = build_training_job(SPEC, CONFIG)["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if v["name"] == "feature-repo")
    assert claim["persistentVolumeClaim"] == {
        "claimName": "loopline-feature-repo",
        "readOnly": True,
    }
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "feature-repo")
    assert (mount["mountPath"], mount["readOnly"]) == (FEATURE_REPO_MOUNT, True)
    assert pod["containers"][0]["envFrom"] == [
        {"secretRef": {"name": "loopline-training-env", "optional": True}}
    ]
    bare = build_training_job(SPEC, JobConfig(image=CONFIG.image, tracking_uri="http://m:5000"))
    bare_pod = bare["spec"]["template"]["spec"]
    assert "feature-repo" not in {v["name"] for v in bare_pod["volumes"]}
    assert "envFrom" not in bare_pod["containers"][0]
    carried = json.loads(bare["spec"]["template"]["metadata"]["annotations"][SPEC_ANNOTATION])
    assert carried["featureRepo"] == SPEC.feature_repo


def test_operator_owns_retries_deadline_and_cleanup() -> None:
    spec = build_training_job(SPEC, CONFIG)["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["ttlSecondsAfterFinished"] == TTL_SECONDS >= 24 * 3600
    no_deadline = JobConfig(image=CONFIG.image, tracking_uri=CONFIG.tracking_uri)
    assert "activeDeadlineSeconds" not in build_training_job(SPEC, no_deadline)["spec"]


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"run_id": "Drill_AE-1"}, "run id 'Drill_AE-1' is not a DNS label"),
        ({"run_id": "r" * 64}, "at most 63 characters"),
        ({"model_name": "x" * 64}, "model name"),
    ],
)
def test_names_that_cannot_be_a_job_or_label_are_refused(
    update: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        build_training_job(SPEC.model_copy(update=update), CONFIG)


def test_missing_image_or_tracking_uri_names_the_setting() -> None:
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_TRAINING_IMAGE"):
        build_training_job(SPEC, JobConfig(image="", tracking_uri="http://m:5000"))
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI"):
        build_training_job(SPEC, JobConfig(image=CONFIG.image, tracking_uri=""))


BATCH = BatchRunSpec(
    run_id="drill-ae-batch-202603020200-0a1b2c",
    namespace="plant",
    model_name="drill-ae",
    registered_model_name="plant.drill-ae",
    mlflow_tracking_uri="http://127.0.0.1:5000",
    feature_repo="/home/op/feature_repo",
)


def test_a_batch_run_is_a_job_of_the_runtime_image_labelled_batch_scoring() -> None:
    config = replace(CONFIG, batch_image="registry.local/loopline/runtime:0.1.0")
    job = build_training_job(BATCH, config)
    labels = job["metadata"]["labels"]
    assert labels["loopline.dev/component"] == "batch-scoring"
    assert _container(job)["image"] == "registry.local/loopline/runtime:0.1.0"
    # Found by the same selectors as training runs (cleanup cancels both).
    assert _matches(run_selector(BATCH.run_id), labels)
    assert _matches(model_selector("drill-ae"), labels)
    carried = parse_run_spec(job["spec"]["template"]["metadata"]["annotations"][SPEC_ANNOTATION])
    assert isinstance(carried, BatchRunSpec)
    assert carried.feature_repo == FEATURE_REPO_MOUNT
    assert carried.mlflow_tracking_uri == CONFIG.tracking_uri
    # The scores and their feature view are written into the repository: mounted read-write.
    (mount,) = [m for m in _container(job)["volumeMounts"] if m["name"] == "feature-repo"]
    assert mount["readOnly"] is False
    (volume,) = [
        v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "feature-repo"
    ]
    assert volume["persistentVolumeClaim"]["readOnly"] is False
    # Training Jobs keep the training image and a read-only repository.
    training = build_training_job(SPEC, config)
    assert _container(training)["image"] == CONFIG.image
    (mount,) = [m for m in _container(training)["volumeMounts"] if m["name"] == "feature-repo"]
    assert mount["readOnly"] is True


def test_a_batch_run_without_a_runtime_image_runs_from_the_training_image() -> None:
    assert _container(build_training_job(BATCH, CONFIG))["image"] == CONFIG.image
