"""The local control plane against the official client and the project-built kubectl."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.rest import ApiException

from loopline.cluster import crds
from loopline.cluster import state as st
from loopline.cluster.errors import ComponentStartError, PortInUseError
from loopline.cluster.manager import LocalCluster
from loopline.cluster.process import live_group_members
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.versions import REPO_ROOT, load_pins
from tests.fixtures.cluster import ClusterHandle, wait_for

SELDON_CRDS = REPO_ROOT / "tests" / "fixtures" / "seldon-core-v2"


def _processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (a state directory path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append((int(entry.name), cmdline))
    return found


# -- the session cluster --------------------------------------------------------------------


def test_server_reports_the_pinned_version(kube_api: k8s.ApiClient) -> None:
    info = k8s.VersionApi(kube_api).get_code()
    assert info.git_version == load_pins().kubernetes


def test_namespace_and_configmap(kube_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_config_map(
        namespace,
        k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings"), data={"threshold": "0.7"}),
    )
    assert core.read_namespaced_config_map("settings", namespace).data == {"threshold": "0.7"}
    assert core.read_namespace(namespace).status.phase == "Active"


@pytest.mark.skipif(not crds.default_dirs(), reason="manifests/crds holds no CRDs yet")
def test_project_crds_are_installed_and_established(
    loopline_crds: list[str], kube_api: k8s.ApiClient
) -> None:
    expected = crds.crd_names(crds.manifest_files(crds.default_dirs()))
    assert sorted(loopline_crds) == sorted(expected)
    ext = k8s.ApiextensionsV1Api(kube_api)
    for name in expected:
        conditions = ext.read_custom_resource_definition(name).status.conditions
        assert any(c.type == "Established" and c.status == "True" for c in conditions), name


def test_unauthenticated_requests_are_refused(cluster: ClusterHandle) -> None:
    http = urllib3.PoolManager(ca_certs=str(cluster.ca_file))
    response = http.request("GET", f"{cluster.server}/api/v1/namespaces")
    assert response.status in (401, 403)
    response = http.request(
        "GET",
        f"{cluster.server}/api/v1/namespaces",
        headers={"Authorization": "Bearer not-a-token"},
    )
    assert response.status == 401


def _widget_crd(group: str) -> dict[str, object]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {
                                            "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
                                            "message": "min must not exceed max",
                                        }
                                    ],
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def test_crd_schema_rejects_invalid_objects_with_its_message(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.test.loopline.dev"
    crd = _widget_crd(group)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        cluster.kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}")
        custom = k8s.CustomObjectsApi(kube_api)

        def create(spec: dict[str, object]) -> dict[str, object]:
            body = {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"generateName": "w-"},
                "spec": spec,
            }
            result: dict[str, object] = custom.create_namespaced_custom_object(
                group, "v1", namespace, "widgets", body
            )
            return result

        assert create({"size": 3, "color": "red", "min": 1, "max": 2})["spec"] == {
            "size": 3,
            "color": "red",
            "min": 1,
            "max": 2,
        }
        cases: dict[str, dict[str, object]] = {
            "spec.size: Invalid value: 11: spec.size in body should be less than or equal to 10": {
                "size": 11
            },
            'spec.color: Unsupported value: "green": supported values: "red", "blue"': {
                "size": 1,
                "color": "green",
            },
            "spec.size: Required value": {"color": "red"},
            "min must not exceed max": {"size": 1, "min": 5, "max": 2},
        }
        for message, spec in cases.items():
            with pytest.raises(ApiException) as info:
                create(spec)
            assert info.value.status == 422
            assert message in json.loads(info.value.body)["message"], spec
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false")


def test_the_fake_node_renews_a_lease_as_a_kubelet_does(
    cluster: ClusterHandle, kube_api: k8s.ApiClient
) -> None:
    """Without a node Lease, kwok's Ready heartbeat (every 20-55 s) outran the
    controller-manager's 50 s grace: the node flapped NotReady once a minute, the node
    controller marked its pods not ready for good, and `helm install --wait` timed out."""
    assert cluster.nodes >= 1
    leases = k8s.CoordinationV1Api(kube_api)

    def renewed() -> object:
        try:
            return leases.read_namespaced_lease("kwok-node-0", "kube-node-lease").spec.renew_time
        except ApiException:
            return None

    first = wait_for(renewed, timeout=60, what="kwok-node-0's Lease")
    second = wait_for(
        lambda: (t := renewed()) is not None and t > first and t,  # type: ignore[operator]
        timeout=45,  # 10 s between renewals, as a kubelet with a 40 s lease
        what="a second renewal of kwok-node-0's Lease",
    )
    # What matters is staying inside the controller-manager's 50 s grace, not the exact period.
    assert (second - first).total_seconds() < 40


def test_deployment_pod_goes_running_on_a_kwok_node(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    assert cluster.nodes >= 1
    labels = {"app": "echo"}
    deployment = k8s.V1Deployment(
        metadata=k8s.V1ObjectMeta(name="echo"),
        spec=k8s.V1DeploymentSpec(
            replicas=2,
            selector=k8s.V1LabelSelector(match_labels=labels),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels=labels),
                spec=k8s.V1PodSpec(
                    containers=[k8s.V1Container(name="echo", image="loopline/echo:1")]
                ),
            ),
        ),
    )
    apps = k8s.AppsV1Api(kube_api)
    core = k8s.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment)

    def running_pods() -> list[k8s.V1Pod] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=echo").items
        ok = [p for p in pods if p.status.phase == "Running"]
        return ok if len(ok) == 2 else None

    pods = wait_for(running_pods, timeout=90, what="2 Running pods")
    assert {p.spec.node_name for p in pods} <= {"kwok-node-0"}
    assert all(p.status.pod_ip for p in pods)
    wait_for(
        lambda: (
            apps.read_namespaced_deployment_status("echo", namespace).status.available_replicas == 2
        ),
        timeout=60,
        what="Deployment available",
    )


def test_kubectl_auth_can_i_honours_a_role(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    rbac = k8s.RbacAuthorizationV1Api(kube_api)
    core = k8s.CoreV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name="reader"))
    )
    rbac.create_namespaced_role(
        namespace,
        k8s.V1Role(
            metadata=k8s.V1ObjectMeta(name="configmap-reader"),
            rules=[
                k8s.V1PolicyRule(
                    api_groups=[""], resources=["configmaps"], verbs=["get", "list", "watch"]
                )
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        namespace,
        k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="reader"),
            role_ref=k8s.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="configmap-reader"
            ),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        ),
    )
    user = f"system:serviceaccount:{namespace}:reader"

    def can_i(*args: str, ns: str = namespace) -> str:
        result = cluster.kubectl("auth", "can-i", *args, "-n", ns, f"--as={user}", check=False)
        return result.stdout.strip()

    assert can_i("get", "configmaps") == "yes"
    assert can_i("watch", "configmaps") == "yes"
    assert can_i("delete", "configmaps") == "no"
    assert can_i("get", "secrets") == "no"
    assert can_i("get", "configmaps", ns="default") == "no"

    # The same decision with the service account's own token: this also proves the
    # generated signing key pair works end to end (TokenRequest -> JWT -> authentication).
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).stdout.strip()
    as_reader = [f"--token={token}", f"--server={cluster.server}", "-n", namespace]
    cluster.kubectl(*as_reader, "get", "configmaps")
    denied = cluster.kubectl(*as_reader, "get", "secrets", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_watch_resumes_after_apiserver_restart(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    """A watcher that reconnects from its last resourceVersion, and relists when the new
    apiserver answers 410 Gone for it (what client-go's reflector and kopf do), misses nothing
    and sees nothing twice across an apiserver restart.

    The 410 is the apiserver's normal answer here, not a fault: the restarted server's watch
    cache starts at the current resourceVersion, so a watch from before any other write in
    the cluster (kwok's node leases write every few seconds) is older than it can serve."""
    core = k8s.CoreV1Api(kube_api)
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    reconnects = 0
    relists = 0
    stop = threading.Event()
    initial = core.list_namespaced_config_map(namespace)
    resource_version = initial.metadata.resource_version
    # What the watcher has seen, as a reflector's store holds it (kube-root-ca.crt is there).
    known = {item.metadata.name for item in initial.items}

    def watcher() -> None:
        nonlocal resource_version, reconnects, relists
        api = cluster.api_client()
        watch_core = k8s.CoreV1Api(api)
        try:
            while not stop.is_set():
                if resource_version is None:  # expired: relist, deliver only what is new
                    try:
                        listed = watch_core.list_namespaced_config_map(namespace)
                    except (urllib3.exceptions.HTTPError, ApiException, OSError):
                        stop.wait(0.5)
                        continue
                    relists += 1
                    for item in listed.items:
                        if item.metadata.name not in known:
                            known.add(item.metadata.name)
                            events.put(("ADDED", item.metadata.name))
                    resource_version = listed.metadata.resource_version
                w = watch.Watch()
                try:
                    for event in w.stream(
                        watch_core.list_namespaced_config_map,
                        namespace,
                        resource_version=resource_version,
                        allow_watch_bookmarks=True,
                        timeout_seconds=60,
                        _request_timeout=(5, 90),
                    ):
                        obj = event["object"]
                        resource_version = obj.metadata.resource_version
                        if event["type"] != "BOOKMARK":
                            if event["type"] == "ADDED":
                                known.add(obj.metadata.name)
                            events.put((event["type"], obj.metadata.name))
                        if stop.is_set():
                            w.stop()
                except ApiException as exc:
                    reconnects += 1
                    if exc.status == 410:
                        resource_version = None
                    stop.wait(0.5)
                except (urllib3.exceptions.HTTPError, OSError):
                    reconnects += 1
                    stop.wait(0.5)
        finally:
            api.close()

    thread = threading.Thread(target=watcher, daemon=True)
    thread.start()
    noise: list[str] = []
    try:
        core.create_namespaced_config_map(
            namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="before"))
        )
        assert events.get(timeout=30) == ("ADDED", "before")

        # Writes elsewhere in the cluster move the resourceVersion past the watcher's, as on
        # any busy cluster: the restarted apiserver then answers 410 and the watcher relists.
        for _ in range(3):
            made = core.create_namespaced_config_map(
                "default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(generate_name="noise-"))
            )
            noise.append(made.metadata.name)
        old_pid = cluster.local.state().process("kube-apiserver").pid  # type: ignore[union-attr]
        cluster.restart_apiserver()
        assert cluster.local.state().process("kube-apiserver").pid != old_pid  # type: ignore[union-attr]

        core.create_namespaced_config_map(
            namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="after"))
        )
        try:
            got = events.get(timeout=60)
        except queue.Empty:
            pytest.fail(
                f"no event for 'after' in 60 s: {reconnects} reconnects, {relists} relists, "
                f"watching from resourceVersion {resource_version}"
            )
        assert got == ("ADDED", "after")
        assert reconnects >= 1, "the watch connection should have dropped with the apiserver"
    finally:
        stop.set()
        thread.join(timeout=10)
        for name in noise:
            core.delete_namespaced_config_map(name, "default")
    seen = []
    while not events.empty():
        seen.append(events.get_nowait())
    assert ("ADDED", "before") not in seen, "replayed an event from before the restart"


@pytest.mark.skipif(not SELDON_CRDS.is_dir(), reason="Seldon CRD fixtures not present")
def test_large_third_party_crds_install_from_an_extra_dir(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    names = cluster.install_crds(SELDON_CRDS)
    assert "servers.mlops.seldon.io" in names  # > 256 KiB: needs server-side apply
    model = {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Model",
        "metadata": {"name": "iris"},
        "spec": {"storageUri": "gs://models/iris", "requirements": ["sklearn"]},
    }
    created = k8s.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        "mlops.seldon.io", "v1alpha1", namespace, "models", model
    )
    assert created["spec"]["storageUri"] == "gs://models/iris"


# -- lifecycle of a cluster of our own --------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # Loopline's CRDs are someone else's subject (test_project_crds_...); this is about
    # processes, so keep a CRD being edited elsewhere from failing it.
    env = {**os.environ, "LOOPLINE_CLUSTER_PROJECT_CRDS": "false"}
    return subprocess.run(
        [sys.executable, "-m", "loopline.cli.main", "cluster", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


@pytest.fixture
def own_state_dir(tmp_path: Path) -> Iterator[Path]:
    state_dir = tmp_path / "own"
    yield state_dir
    LocalCluster(ClusterSettings(state_dir=state_dir)).down()  # whatever the test left
    assert _processes_mentioning(str(state_dir)) == []


def test_cli_lifecycle_noop_recovery_and_down(own_state_dir: Path) -> None:
    """`up` via the CLI (processes outlive it), `up` again is a no-op, a run killed hard is
    reported with its dead processes and brought back by the next `up` with its data, ports
    and kubeconfig, `down` leaves no process behind."""
    sd = ["--state-dir", str(own_state_dir)]
    first = _cli("up", "--nodes", "1", *sd)
    assert first.returncode == 0, first.stderr
    kubeconfig = own_state_dir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in first.stdout
    state = st.load(own_state_dir / "state.json")
    assert state is not None
    pids = {p.name: p.pid for p in state.processes}
    assert list(pids) == [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
    ]
    assert all(st.is_alive(p) for p in state.processes), "processes must outlive the CLI"

    # What a person following docs/ does.
    kubectl_env = {**os.environ, "KUBECONFIG": str(kubeconfig)}

    def kubectl(*args: str) -> str:
        return subprocess.run(
            [str(state.bin_dir / "kubectl"), *args],
            env=kubectl_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert "namespace/default" in kubectl("get", "ns", "-o", "name").split()
    kubectl("create", "namespace", "survives")
    assert _cli("kubeconfig", *sd).stdout.strip() == str(kubeconfig)
    assert _cli("status", *sd).returncode == 0

    again = _cli("up", "--nodes", "1", *sd)
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    after = st.load(own_state_dir / "state.json")
    assert after is not None
    assert {p.name: p.pid for p in after.processes} == pids

    # A run killed hard (machine sleep, OOM, kill -9): the state file and data remain.
    config_before = kubeconfig.read_bytes()
    for record in state.processes:
        os.killpg(record.pid, signal.SIGKILL)
    wait_for(lambda: not any(st.is_alive(p) for p in state.processes), timeout=10)
    stale = _cli("status", *sd)
    assert stale.returncode == 1
    assert stale.stdout.startswith("stale")
    assert f"kwok (pid {pids['kwok']}) are dead" in stale.stdout
    assert "restarts them with the same etcd data" in stale.stdout

    restarted = _cli("up", "--nodes", "1", *sd)
    assert restarted.returncode == 0, restarted.stderr
    assert "restarted etcd, kube-apiserver, kube-controller-manager" in restarted.stdout
    fresh = st.load(own_state_dir / "state.json")
    assert fresh is not None
    assert [p.name for p in fresh.processes] == list(pids)
    assert not {p.pid for p in fresh.processes} & set(pids.values())
    assert fresh.ports == state.ports
    assert kubeconfig.read_bytes() == config_before
    assert "namespace/survives" in kubectl("get", "ns", "-o", "name").split()

    down = _cli("down", *sd)
    assert down.returncode == 0, down.stderr
    assert not any(st.is_alive(p) for p in fresh.processes)
    for record in fresh.processes:  # nothing they spawned survives either
        assert live_group_members(record.pid) == [], record.name
    assert _processes_mentioning(str(own_state_dir)) == []
    assert not own_state_dir.exists()


def test_taken_port_is_a_clear_error_and_starts_nothing(own_state_dir: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        local = LocalCluster(ClusterSettings(state_dir=own_state_dir, apiserver_port=port))
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port}"):
            local.up()
    assert local.status().health is st.Health.STOPPED
    assert _processes_mentioning(str(own_state_dir)) == []


def test_component_failing_at_start_shows_its_log_and_cleans_up(own_state_dir: Path) -> None:
    local = LocalCluster(
        ClusterSettings(state_dir=own_state_dir, apiserver_extra_args=["--no-such-flag=1"])
    )
    with pytest.raises(ComponentStartError, match="kube-apiserver exited during start") as info:
        local.up()
    assert "unknown flag: --no-such-flag" in str(info.value)
    # etcd had started before the apiserver failed: it must be gone again.
    assert _processes_mentioning(str(own_state_dir)) == []
    assert local.status().health is st.Health.STOPPED
    assert info.value.log.is_file()  # kept for the person reading the error


def test_kubeconfig_is_self_contained_and_private(cluster: ClusterHandle) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    assert config["clusters"][0]["cluster"]["server"] == cluster.server
    assert "certificate-authority-data" in config["clusters"][0]["cluster"]
    assert cluster.kubeconfig.stat().st_mode & 0o077 == 0
    who = cluster.kubectl("auth", "whoami", "-o", "json")
    user = json.loads(who.stdout)["status"]["userInfo"]
    assert "system:masters" in user["groups"]
