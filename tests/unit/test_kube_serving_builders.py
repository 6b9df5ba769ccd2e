"""The kubernetes serving backend's Deployment and Service: names, labels, probes, the rolling
update that drops no request, the server's command line, the token by reference, resources and
the canary weight in the pod template."""

from __future__ import annotations

from typing import Any

import click
import pytest

from loopline import auth
from loopline.cli.serve import pod as pod_command
from loopline.operators.backends.kube_serving import KubernetesServingBackend
from loopline.operators.builders.auth import DIGEST_ENV, token_secret_name
from loopline.operators.builders.kube_serving import (
    ASYNC_REDIS_URL_ENV,
    CANARY_ANNOTATION,
    CHAMPION_ANNOTATION,
    REVISION_LABEL,
    WEIGHT_ANNOTATION,
    build_deployment,
    build_service,
    endpoints,
    server_name,
)
from loopline.operators.builders.kube_serving_status import served
from loopline.operators.builders.serving import ServingDesired, build_serving
from loopline.operators.settings import OperatorSettings
from loopline.types.model import ModelSpec, ServingResources

TRACKING = "http://mlflow.loopline-system.svc:5000"


def _desired(**kw: Any) -> ServingDesired:
    base: dict[str, Any] = {
        "namespace": "plant",
        "name": "drill-ae",
        "registered_model": "plant.drill-ae",
        "champion_version": "3",
    }
    return ServingDesired(**(base | kw))


def _deployment(desired: ServingDesired | None = None, digest: str = "abc") -> dict[str, Any]:
    return build_deployment(
        desired or _desired(),
        image="loopline/runtime:1",
        pull_policy="Never",
        tracking_uri=TRACKING,
        digest=digest,
    )


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _parsed_args(container: dict[str, Any]) -> dict[str, Any]:
    """The container's arguments as `loopline serve pod` parses them."""
    assert container["command"] == ["loopline", "serve", "pod"]
    ctx = pod_command.make_context("pod", list(container["args"]))
    return dict(ctx.params)


def test_names_labels_and_selector() -> None:
    deployment = _deployment()
    service = build_service("plant", "drill-ae")
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == "drill-ae-server"
    want = {
        "app.kubernetes.io/managed-by": "loopline",
        "loopline.dev/model": "drill-ae",
        "loopline.dev/component": "server",
    }
    assert deployment["metadata"]["labels"] == want
    assert service["metadata"]["labels"] == want
    selector = {"loopline.dev/model": "drill-ae", "loopline.dev/component": "server"}
    assert deployment["spec"]["selector"]["matchLabels"] == selector
    assert service["spec"]["selector"] == selector
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pod_labels.items() >= want.items()
    assert pod_labels[REVISION_LABEL]
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8080,
        "grpc": 8081,
        "metrics": 8082,
    }
    assert endpoints("plant", "drill-ae") == {
        "rest": "http://drill-ae-server.plant.svc:8080",
        "grpc": "drill-ae-server.plant.svc:8081",
    }


@pytest.mark.parametrize("model", ["a" * 57, "9lives"])
def test_a_name_the_service_cannot_take_is_refused_clearly(model: str) -> None:
    with pytest.raises(ValueError, match=r"DNS-1035 label.*at most 56 characters"):
        server_name(model)


def test_a_56_character_name_fits() -> None:
    assert server_name("a" * 56) == "a" * 56 + "-server"


def test_rolling_update_never_drops_a_request() -> None:
    deployment = _deployment()
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    drain = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert drain >= 5  # longer than endpoint removal takes to reach kube-proxy
    assert pod["terminationGracePeriodSeconds"] >= drain + 20  # then the server's own stop
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # a busy node slows a server down; only a minute without an answer restarts it
    live = container["livenessProbe"]
    assert live["periodSeconds"] * live["failureThreshold"] >= 60
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_pods_are_locked_down() -> None:
    deployment = _deployment()
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp", "/var/lib/loopline"}  # HOME, caches and the server's files
    assert container["image"] == "loopline/runtime:1"
    assert container["imagePullPolicy"] == "Never"


def test_the_server_command_is_one_loopline_serve_pod_accepts() -> None:
    params = _parsed_args(_container(_deployment(_desired(monitor_url="http://mon:8090"))))
    assert params["server"] == "lean"
    assert params["name"] == "drill-ae"
    assert params["model_uri"] == "models:/plant.drill-ae/3"
    assert params["canary_uri"] == ""
    assert params["canary_weight"] == 0.0
    assert params["tracking_uri"] == TRACKING
    assert params["monitor_url"] == "http://mon:8090"
    assert params["fallback_on_missing_sensors"] is True
    assert (params["http_port"], params["grpc_port"], params["metrics_port"]) == (8080, 8081, 8082)
    strict = _desired(fallback_on_missing_sensors=False)
    assert _parsed_args(_container(_deployment(strict)))["fallback_on_missing_sensors"] is False


def test_container_ports_match_the_server_arguments() -> None:
    container = _container(_deployment())
    params = _parsed_args(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "http": params["http_port"],
        "grpc": params["grpc_port"],
        "metrics": params["metrics_port"],
    }


def test_canary_weight_is_in_the_template_and_changes_the_revision() -> None:
    ten = _deployment(_desired(canary_version="4", canary_weight=10))
    fifty = _deployment(_desired(canary_version="4", canary_weight=50))
    params = _parsed_args(_container(ten))
    assert params["canary_uri"] == "models:/plant.drill-ae/4"
    assert params["canary_weight"] == pytest.approx(0.1)
    assert _parsed_args(_container(fifty))["canary_weight"] == pytest.approx(0.5)
    revisions = {d["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] for d in (ten, fifty)}
    assert len(revisions) == 2  # a new weight is a new template: the Deployment rolls
    assert ten["metadata"]["annotations"] == {
        CHAMPION_ANNOTATION: "3",
        CANARY_ANNOTATION: "4",
        WEIGHT_ANNOTATION: "10",
    }
    again = _deployment(_desired(canary_version="4", canary_weight=10))
    assert again == ten  # same desired state, same object: an apply changes nothing
    what = served(ten)
    assert (what.champion_version, what.canary_version, what.canary_weight) == ("3", "4", 10)
    assert served(_deployment()).canary_version is None


def test_token_by_reference_and_its_digest_rolls_the_pods() -> None:
    one, two = _deployment(digest="d1"), _deployment(digest="d2")
    env = _container(one)["env"]
    token = next(e for e in env if e["name"] == auth.TOKEN_ENV)
    assert "value" not in token
    assert token["valueFrom"]["secretKeyRef"] == {
        "name": token_secret_name("drill-ae"),
        "key": auth.SECRET_KEY,
    }
    assert {"name": DIGEST_ENV, "value": "d1"} in env
    labels = [d["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] for d in (one, two)]
    assert labels[0] != labels[1]


def test_resources_from_the_model_spec() -> None:
    spec = ModelSpec.model_validate(
        {
            "task": "anomaly-detection",
            "pipelineRef": {"name": "training"},
            "serving": {
                "replicas": 2,
                "resources": {
                    "requests": {"cpu": "250m", "memory": "512Mi"},
                    "limits": {"memory": "1Gi"},
                },
            },
        }
    )
    desired = build_serving("plant", "drill-ae", spec, "3", None, 0)
    assert desired is not None
    deployment = _deployment(desired)
    assert deployment["spec"]["replicas"] == 2
    assert _container(deployment)["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"memory": "1Gi"},
    }
    assert "resources" not in _container(_deployment())
    empty = _desired(resources=ServingResources())
    assert "resources" not in _container(_deployment(empty))


def test_an_empty_image_is_refused_with_the_setting_to_fix() -> None:
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_RUNTIME_IMAGE"):
        build_deployment(_desired(), image="", tracking_uri=TRACKING, digest="d")


def test_serve_pod_refuses_bad_arguments() -> None:
    with pytest.raises(click.BadParameter):
        pod_command.make_context("pod", ["--name=m", "--model-uri=models:/m/1", "--http-port=0"])


def test_async_inference_reaches_the_server_container_only_when_set() -> None:
    def env(deployment: dict[str, Any]) -> dict[str, Any]:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    assert ASYNC_REDIS_URL_ENV not in env(_deployment())
    url = "redis://redis.plant.svc:6379/0"
    with_async = build_deployment(
        _desired(), image="loopline/runtime:1", tracking_uri=TRACKING, digest="d",
        async_redis_url=url,
    )  # fmt: skip
    assert env(with_async)[ASYNC_REDIS_URL_ENV] == url


def test_a_server_service_account_runs_the_pods_with_its_token_and_nothing_else_changes() -> None:
    """The token-review ServiceAccount: named and its token mounted (the server's in-cluster
    TokenReviews need it); the pods stay as locked down as without it."""
    plain = _deployment()
    bound = build_deployment(
        _desired(), image="loopline/runtime:1", pull_policy="Never", tracking_uri=TRACKING,
        digest="abc", service_account="ll-loopline-model-server",
    )  # fmt: skip
    pod = bound["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ll-loopline-model-server"
    assert pod["automountServiceAccountToken"] is True
    assert "serviceAccountName" not in plain["spec"]["template"]["spec"]
    rest = {
        k: v
        for k, v in pod.items()
        if k not in ("serviceAccountName", "automountServiceAccountToken")
    }
    plain_rest = {
        k: v for k, v in plain["spec"]["template"]["spec"].items()
        if k != "automountServiceAccountToken"
    }  # fmt: skip
    assert rest == plain_rest
    # A new identity is a new pod template: the Deployment rolls to it.
    revisions = {
        d["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] for d in (plain, bound)
    }
    assert len(revisions) == 2


@pytest.mark.parametrize("account", ["Model_Server", "-server", "a" * 254])
def test_a_bad_server_service_account_is_refused_naming_the_setting(account: str) -> None:
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_SERVER_SERVICE_ACCOUNT"):
        build_deployment(
            _desired(), image="i", tracking_uri=TRACKING, digest="d", service_account=account
        )


def _pod_spec_from_backend(settings: OperatorSettings, namespace: str) -> dict[str, Any]:
    backend = KubernetesServingBackend(
        settings,
        tracking_uri=TRACKING,
        api=object(),  # desired_objects talks to no API server
    )
    (deployment,) = [
        d for d in backend.desired_objects(_desired(namespace=namespace), "abc")
        if d["kind"] == "Deployment"
    ]  # fmt: skip
    return dict(deployment["spec"]["template"]["spec"])


def test_the_backend_names_the_service_account_only_where_it_exists() -> None:
    """The chart makes the ServiceAccount in the namespaces it lists; a Model elsewhere gets
    today's pods (a pod naming a missing ServiceAccount is never created)."""
    listed = OperatorSettings(
        runtime_image="img",
        server_service_account="ll-loopline-model-server",
        server_service_account_namespaces=["plant", "lab"],
    )
    assert _pod_spec_from_backend(listed, "plant")["serviceAccountName"] == (
        "ll-loopline-model-server"
    )
    elsewhere = _pod_spec_from_backend(listed, "default")
    assert "serviceAccountName" not in elsewhere
    assert elsewhere["automountServiceAccountToken"] is False
    anywhere = OperatorSettings(runtime_image="img", server_service_account="srv")
    assert _pod_spec_from_backend(anywhere, "default")["serviceAccountName"] == "srv"
    unset = _pod_spec_from_backend(OperatorSettings(runtime_image="img"), "plant")
    assert "serviceAccountName" not in unset
    assert unset["automountServiceAccountToken"] is False
