"""The objects of a Model's drift monitor on a cluster, as the builders make them."""

from __future__ import annotations

import json
from typing import Any

import click
import pytest

from loopline import auth
from loopline.monitoring.settings import ENV_PREFIX, MonitorSettings
from loopline.operators.backends.monitoring import LocalMonitoringBackend
from loopline.operators.builders.auth import DIGEST_ENV
from loopline.operators.builders.kube_monitoring import (
    CHAMPION_ANNOTATION,
    PORT,
    RELOAD_ANNOTATION,
    STATE_DIR,
    STATE_MOUNT,
    MonitorPodConfig,
    account_name,
    build_deployment,
    build_network_policy,
    build_role_binding,
    build_service,
    build_service_account,
    build_state_claim,
    monitor_env,
    monitor_name,
    server_peer,
    service_url,
    status_url,
)
from loopline.operators.builders.monitoring import MonitorDesired

DESIRED = MonitorDesired(
    namespace="plant",
    name="drill-ae",
    champion_version="3",
    detector="mmd",
    p_value=0.05,
    window_size=200,
    cooldown_seconds=600,
    retrain_on_drift=True,
)
CONFIG = MonitorPodConfig(
    image="registry.local/loopline/runtime:abc",
    tracking_uri="http://mlflow.mlflow.svc:5000",
    storage_class="fast",
    cluster_role="sap-loopline-monitor",
    ingress_peers=(
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "loopline"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
        },
    ),
)
LABELS = {
    "app.kubernetes.io/managed-by": "loopline",
    "loopline.dev/model": "drill-ae",
    "loopline.dev/component": "monitor",
}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in _container(deployment)["env"]}


def test_names_derive_from_the_model_and_long_names_fail_clearly() -> None:
    assert monitor_name("drill-ae") == "drill-ae-monitor"
    assert account_name("drill-ae") == "drill-ae-loopline-monitor"
    longest = "m" * 55
    assert len(monitor_name(longest)) == 63
    with pytest.raises(ValueError, match=r"too long for a drift monitor.*at most 55"):
        monitor_name("m" * 56)
    with pytest.raises(ValueError, match="not a DNS label"):
        monitor_name("Drill_AE")


def test_every_object_is_in_the_models_namespace_and_labelled() -> None:
    objects = [
        build_deployment(DESIRED, CONFIG),
        build_service("plant", "drill-ae"),
        build_state_claim("plant", "drill-ae", CONFIG),
        build_network_policy("plant", "drill-ae", CONFIG, server_peer("drill-ae")),
        build_service_account("plant", "drill-ae"),
        build_role_binding("plant", "drill-ae", CONFIG.cluster_role),
    ]
    for obj in objects:
        assert obj["metadata"]["namespace"] == "plant", obj["kind"]
        assert obj["metadata"]["labels"] == LABELS, obj["kind"]
    assert {o["metadata"]["name"] for o in objects[:4]} == {"drill-ae-monitor"}


def test_deployment_is_one_recreated_replica_with_its_claim_mounted() -> None:
    deployment = build_deployment(DESIRED, CONFIG)
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}  # a ReadWriteOnce volume, one writer
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "drill-ae-monitor"},
    }
    mounts = {m["name"]: m["mountPath"] for m in _container(deployment)["volumeMounts"]}
    assert mounts == {"state": STATE_MOUNT, "tmp": "/tmp"}
    assert STATE_DIR.startswith(STATE_MOUNT + "/")
    assert "initContainers" not in pod


def test_the_claim_uses_the_configured_class_and_size() -> None:
    claim = build_state_claim("plant", "drill-ae", CONFIG)
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["metadata"]["name"] == "drill-ae-monitor"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["storageClassName"] == "fast"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    default = build_state_claim("plant", "drill-ae", MonitorPodConfig(image="i", tracking_uri="u"))
    assert "storageClassName" not in default["spec"]  # the cluster's default class


def test_a_hostpath_volume_gets_its_permissions_init_container() -> None:
    config = MonitorPodConfig(image="img:1", tracking_uri="u", permissions_init=True)
    pod = build_deployment(DESIRED, config)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["image"] == "img:1"
    assert init["volumeMounts"] == [{"name": "state", "mountPath": STATE_MOUNT}]
    assert init["command"][-1] == STATE_MOUNT


def test_pod_is_hardened_and_mounts_a_service_account_token_for_its_one_call() -> None:
    deployment = build_deployment(DESIRED, CONFIG)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = _container(deployment)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["serviceAccountName"] == "drill-ae-loopline-monitor"
    assert pod["automountServiceAccountToken"] is True  # it annotates its Model
    assert pod["enableServiceLinks"] is False
    assert container["image"] == CONFIG.image
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["limits"]["memory"]


def test_command_is_the_monitor_cli_and_its_env_the_local_backends_settings(
    tmp_path: Any,
) -> None:
    """The same LOOPLINE_MONITOR_* values the local backend sets, but for a pod: all hosts,
    the Service's port, the claim's directory, the in-cluster client."""
    deployment = build_deployment(DESIRED, CONFIG)
    container = _container(deployment)
    assert container["command"] == ["loopline", "monitor", "serve"]
    assert "--model=drill-ae" in container["args"]
    assert f"--state-dir={STATE_DIR}" in container["args"]
    env = {k: v["value"] for k, v in _env(deployment).items() if "value" in v}
    local = LocalMonitoringBackend(tmp_path, tracking_uri="sqlite:///x.db", kubeconfig=None)
    local_env = {k: v for k, v in local._env(DESIRED, 1234).items() if k.startswith(ENV_PREFIX)}
    cluster_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert set(cluster_env) == set(local_env)
    differ = {k for k in local_env if local_env[k] != cluster_env[k]}
    assert differ == {f"{ENV_PREFIX}{k}" for k in ("HOST", "PORT", "TRACKING_URI", "STATE_DIR")}
    assert cluster_env[f"{ENV_PREFIX}HOST"] == "0.0.0.0"
    assert cluster_env[f"{ENV_PREFIX}PORT"] == str(PORT)
    assert cluster_env[f"{ENV_PREFIX}TRACKING_URI"] == CONFIG.tracking_uri
    assert cluster_env[f"{ENV_PREFIX}KUBECONFIG"] == ""  # in-cluster
    assert cluster_env[f"{ENV_PREFIX}REQUESTER"] == "kubernetes"
    # the monitor accepts them: no variable a pod would crash-loop on
    fields = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in cluster_env.items()}
    settings = MonitorSettings.model_validate(fields)
    assert (settings.detector, settings.window_size, settings.p_value) == ("mmd", 200, 0.05)
    assert str(settings.resolved_state_dir()) == STATE_DIR
    assert monitor_env(DESIRED, "u") == {k: v for k, v in local_env.items()} | {
        f"{ENV_PREFIX}HOST": "0.0.0.0",
        f"{ENV_PREFIX}PORT": str(PORT),
        f"{ENV_PREFIX}TRACKING_URI": "u",
        f"{ENV_PREFIX}STATE_DIR": STATE_DIR,
    }


def test_token_comes_by_reference_and_its_digest_rolls_the_pod() -> None:
    token = auth.new_token()
    digest = auth.fingerprint(token)
    deployment = build_deployment(DESIRED, CONFIG, token_digest=digest)
    env = _env(deployment)
    assert env[auth.TOKEN_ENV]["valueFrom"] == {
        "secretKeyRef": {"name": "drill-ae-loopline-token", "key": auth.SECRET_KEY}
    }
    assert env[DIGEST_ENV]["value"] == digest
    assert token not in json.dumps(deployment)
    assert DIGEST_ENV not in _env(build_deployment(DESIRED, CONFIG))  # unknown: none
    rotated = build_deployment(DESIRED, CONFIG, token_digest=auth.fingerprint(auth.new_token()))
    assert rotated["spec"]["template"] != deployment["spec"]["template"]


def test_a_new_champion_or_a_reload_changes_the_pod_template() -> None:
    template = build_deployment(DESIRED, CONFIG)["spec"]["template"]
    assert template["metadata"]["annotations"] == {CHAMPION_ANNOTATION: "3"}
    new = MonitorDesired(**{**DESIRED.__dict__, "champion_version": "4"})
    assert build_deployment(new, CONFIG)["spec"]["template"] != template
    reloaded = build_deployment(DESIRED, CONFIG, reload="2026-12-05T10:00:00Z")
    assert reloaded["spec"]["template"]["metadata"]["annotations"][RELOAD_ANNOTATION]
    assert build_deployment(DESIRED, CONFIG) == build_deployment(DESIRED, CONFIG)  # stable


def test_service_exposes_the_one_port() -> None:
    service = build_service("plant", "drill-ae")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {
        "loopline.dev/model": "drill-ae",
        "loopline.dev/component": "monitor",
    }
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (PORT, "http")


def test_network_policy_admits_the_models_servers_and_the_configured_peers_only() -> None:
    policy = build_network_policy("plant", "drill-ae", CONFIG, server_peer("drill-ae"))
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"]["matchLabels"] == {
        "loopline.dev/model": "drill-ae",
        "loopline.dev/component": "monitor",
    }
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": PORT, "protocol": "TCP"}]
    servers, operator = rule["from"]
    # no namespaceSelector: the server pods of this Model in this namespace only
    assert servers == {
        "podSelector": {
            "matchLabels": {"loopline.dev/model": "drill-ae", "loopline.dev/component": "server"}
        }
    }
    assert operator == CONFIG.ingress_peers[0]


def test_with_seldon_the_servers_are_the_models_server_pods() -> None:
    peer = server_peer("drill-ae", seldon_namespace="seldon")
    assert peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "seldon"}},
        "podSelector": {"matchLabels": {"seldon-server-name": "drill-ae-server"}},
    }


@pytest.mark.parametrize(
    "peer",
    [
        {},
        {"podSelector": {}},
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"a": "b"}}},
    ],
)
def test_an_empty_peer_is_refused(peer: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="admits every pod"):
        MonitorPodConfig(image="i", tracking_uri="u", ingress_peers=(peer,))


def test_missing_image_or_tracking_uri_says_which_setting() -> None:
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_RUNTIME_IMAGE"):
        MonitorPodConfig(image="", tracking_uri="u")
    with pytest.raises(ValueError, match="LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI"):
        MonitorPodConfig(image="i", tracking_uri="")


def test_identity_is_the_models_own_service_account_bound_to_the_cluster_role() -> None:
    account = build_service_account("plant", "drill-ae")
    assert account["metadata"]["name"] == "drill-ae-loopline-monitor"
    assert account["automountServiceAccountToken"] is False
    binding = build_role_binding("plant", "drill-ae", "sap-loopline-monitor")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "sap-loopline-monitor",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "drill-ae-loopline-monitor", "namespace": "plant"}
    ]
    with pytest.raises(ValueError, match="ClusterRole"):
        build_role_binding("plant", "drill-ae", "")


def test_pods_sample_to_the_dns_name_the_operator_reads_the_cluster_ip() -> None:
    assert service_url("plant", "drill-ae") == f"http://drill-ae-monitor.plant.svc:{PORT}"
    assert status_url("10.96.0.12") == f"http://10.96.0.12:{PORT}"
    assert status_url("fd00::12") == f"http://[fd00::12]:{PORT}"
    for headless in ("", "None"):
        with pytest.raises(ValueError, match="no ClusterIP"):
            status_url(headless)


def test_command_and_flags_are_what_the_cli_accepts() -> None:
    """Parsed by the real `loopline monitor serve`: a flag it lacks would crash-loop the pod."""
    from loopline.cli.main import cli

    container = _container(build_deployment(DESIRED, CONFIG))
    argv = container["command"][1:] + container["args"]
    context = cli.make_context("loopline", [], resilient_parsing=True)
    group = cli.get_command(context, argv[0])
    assert isinstance(group, click.Group)
    command = group.get_command(context, argv[1])
    assert command is not None
    parsed = command.make_context(argv[1], list(argv[2:]))
    assert parsed.params["model"] == "drill-ae"
    assert parsed.params["namespace"] == "plant"
    assert parsed.params["port"] == container["ports"][0]["containerPort"] == PORT
    assert str(parsed.params["state_dir"]) == STATE_DIR
