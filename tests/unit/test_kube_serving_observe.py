"""What a server Deployment and its pods mean for a Model: ready only when the rollout is done
(as `kubectl rollout status` judges it), and when not, why, naming the pod and the command that
shows more. The dicts have the shape the API server returns (the fields the mapping reads)."""

from __future__ import annotations

from typing import Any

import pytest

from loopline.operators.builders.kube_serving import REVISION_LABEL, build_deployment
from loopline.operators.builders.kube_serving_status import (
    metrics_urls,
    observe_serving,
    pod_problem,
    rollout_state,
)
from loopline.operators.builders.serving import (
    MODEL_NOT_READY,
    SERVER_FAILED,
    SERVER_RESTARTING,
    UNHEALTHY,
    ServingDesired,
)


def _deployment(
    *,
    replicas: int = 2,
    generation: int = 1,
    observed: int = 1,
    updated: int = 2,
    total: int = 2,
    available: int = 2,
    canary: str | None = None,
    weight: int = 0,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    desired = ServingDesired(
        namespace="plant",
        name="drill-ae",
        registered_model="plant.drill-ae",
        champion_version="3",
        canary_version=canary,
        canary_weight=weight,
        replicas=replicas,
    )
    obj = build_deployment(desired, image="img", tracking_uri="http://mlflow", digest="d")
    obj["metadata"]["generation"] = generation
    obj["status"] = {
        "observedGeneration": observed,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": available,
        "availableReplicas": available,
        "conditions": conditions or [],
    }
    return obj


def _revision(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["metadata"]["labels"][REVISION_LABEL])


def _pod(
    name: str,
    revision: str,
    *,
    ready: bool = True,
    ip: str = "10.0.0.5",
    waiting: dict[str, str] | None = None,
    restarts: int = 0,
    last_exit: dict[str, Any] | None = None,
    started: str = "2026-12-05T09:00:05Z",
    ready_since: str = "2026-12-05T09:00:00Z",
    unschedulable: str = "",
) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": waiting} if waiting else {"running": {"startedAt": started}}
    conditions = [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": ready_since}
    ]
    if unschedulable:
        conditions.append(
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": unschedulable,
            }
        )
    return {
        "metadata": {
            "name": name,
            "namespace": "plant",
            "labels": {"loopline.dev/model": "drill-ae", REVISION_LABEL: revision},
        },
        "spec": {
            "containers": [
                {"name": "server", "ports": [{"name": "metrics", "containerPort": 8082}]}
            ]
        },
        "status": {
            "podIP": ip,
            "conditions": conditions,
            "containerStatuses": []
            if unschedulable
            else [
                {
                    "name": "server",
                    "ready": ready,
                    "restartCount": restarts,
                    "state": state,
                    "lastState": {"terminated": last_exit} if last_exit else {},
                }
            ],
        },
    }


def test_a_finished_rollout_is_ready_with_the_service_endpoints() -> None:
    deployment = _deployment(canary="4", weight=10)
    rev = _revision(deployment)
    observed = observe_serving(deployment, [_pod("a", rev), _pod("b", rev)], "plant", "drill-ae")
    assert observed.ready
    assert (observed.champion_version, observed.canary_version, observed.canary_weight) == (
        "3",
        "4",
        10,
    )
    assert observed.endpoints["rest"] == "http://drill-ae-server.plant.svc:8080"
    assert observed.reason == ""
    assert observed.canary_healthy is None
    assert "2 of 2 pods ready" in observed.message


@pytest.mark.parametrize(
    ("status", "waits_for"),
    [
        ({"generation": 2, "observed": 1}, "controller to see the new spec"),
        ({"updated": 1}, "1 of 2 pods updated"),
        ({"total": 3}, "1 old pods still terminating"),
        ({"available": 1}, "1 of 2 updated pods available"),
        (
            {"conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]},
            "exceeded its progress deadline",
        ),
    ],
)
def test_a_rollout_in_progress_is_not_ready(status: dict[str, Any], waits_for: str) -> None:
    deployment = _deployment(**status)
    done, message = rollout_state(deployment)
    assert not done
    assert waits_for in message
    observed = observe_serving(deployment, [], "plant", "drill-ae")
    assert not observed.ready
    assert observed.reason == ""  # rolling out, not unhealthy
    assert waits_for in observed.message


def test_new_pods_loading_are_not_a_problem() -> None:
    deployment = _deployment(updated=1, total=3, available=2)
    rev = _revision(deployment)
    loading = _pod("new", rev, ready=False)  # Ready False since before the container started
    assert pod_problem(loading) is None
    observed = observe_serving(deployment, [loading], "plant", "drill-ae")
    assert not observed.ready
    assert observed.reason == ""


def test_crash_loop_names_the_pod_and_the_logs_command() -> None:
    deployment = _deployment(available=0, updated=2)
    rev = _revision(deployment)
    crashing = _pod(
        "drill-ae-server-7f-abc",
        rev,
        ready=False,
        waiting={"reason": "CrashLoopBackOff", "message": "back-off 40s"},
        restarts=4,
        last_exit={"exitCode": 1, "reason": "Error"},
    )
    observed = observe_serving(deployment, [crashing], "plant", "drill-ae")
    assert not observed.ready
    assert observed.reason == SERVER_RESTARTING
    assert observed.reason in UNHEALTHY
    assert "pod drill-ae-server-7f-abc" in observed.message
    assert "exited with code 1 (Error), restarted 4 times" in observed.message
    assert "kubectl logs -n plant drill-ae-server-7f-abc -c server --previous" in observed.message


@pytest.mark.parametrize(
    "reason", ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"]
)
def test_pods_that_cannot_start_fail_the_server(reason: str) -> None:
    deployment = _deployment(available=0)
    rev = _revision(deployment)
    pod = _pod("p1", rev, ready=False, waiting={"reason": reason, "message": "no such image"})
    observed = observe_serving(deployment, [pod], "plant", "drill-ae")
    assert observed.reason == SERVER_FAILED
    assert f"pod p1: {reason}: no such image" in observed.message
    assert "kubectl describe pod -n plant p1" in observed.message


def test_an_unschedulable_pod_points_at_the_resources() -> None:
    deployment = _deployment(available=0)
    rev = _revision(deployment)
    pod = _pod("p1", rev, ready=False, unschedulable="0/1 nodes are available: 1 Insufficient cpu.")
    observed = observe_serving(deployment, [pod], "plant", "drill-ae")
    assert observed.reason == SERVER_FAILED
    assert "Insufficient cpu" in observed.message
    assert "spec.serving.resources" in observed.message


def test_a_model_that_stopped_answering_ready() -> None:
    deployment = _deployment(available=1)
    rev = _revision(deployment)
    lost = _pod(
        "p2", rev, ready=False, started="2026-12-05T09:00:05Z", ready_since="2026-12-05T09:30:00Z"
    )
    observed = observe_serving(deployment, [_pod("p1", rev), lost], "plant", "drill-ae")
    assert observed.reason == MODEL_NOT_READY
    assert "pod p2: the model server runs but its model stopped answering ready" in (
        observed.message
    )


def test_the_worst_problem_gives_the_reason() -> None:
    deployment = _deployment(available=0)
    rev = _revision(deployment)
    pods = [
        _pod("a", rev, ready=False, ready_since="2026-12-05T09:30:00Z"),
        _pod("b", rev, ready=False, waiting={"reason": "ErrImagePull", "message": "x"}),
    ]
    assert observe_serving(deployment, pods, "plant", "drill-ae").reason == SERVER_FAILED


def test_problems_of_old_pods_do_not_count() -> None:
    deployment = _deployment(updated=2, total=3, available=2)
    rev = _revision(deployment)
    old = _pod("old", "0ld", ready=False, waiting={"reason": "CrashLoopBackOff"}, restarts=3)
    observed = observe_serving(deployment, [_pod("a", rev), _pod("b", rev), old], "plant", "m")
    assert observed.reason == ""


def test_a_canary_step_whose_new_pods_crash_is_rolled_back_not_degraded() -> None:
    """The previous template's pods still serve (maxUnavailable 0): the Model is answered, the
    canary is what broke, so it is reported unhealthy and the operator rolls it back."""
    deployment = _deployment(replicas=1, canary="4", weight=10, updated=1, total=2, available=1)
    rev = _revision(deployment)
    new = _pod(
        "new",
        rev,
        ready=False,
        waiting={"reason": "CrashLoopBackOff"},
        restarts=2,
        last_exit={"exitCode": 1, "reason": "Error"},
    )
    observed = observe_serving(deployment, [_pod("old", "0ld"), new], "plant", "drill-ae")
    assert not observed.ready
    assert observed.canary_healthy is False
    assert observed.canary_reason.startswith("version 4 at 10%: pod new: the model server exited")
    assert observed.reason == ""


def test_metrics_urls_are_the_ready_pods_of_the_current_template() -> None:
    deployment = _deployment()
    rev = _revision(deployment)
    pods = [
        _pod("a", rev, ip="10.0.0.1"),
        _pod("b", rev, ip="10.0.0.2", ready=False),
        _pod("c", "0ld", ip="10.0.0.3"),
        _pod("d", rev, ip=""),
    ]
    assert metrics_urls(pods, rev) == {"a": "http://10.0.0.1:8082/metrics"}
