"""The containerd node runs real pods: logs, exec, port-forward, Services by ClusterIP and by
DNS name, images pulled from the cluster's registry, a killed container restarted by the
kubelet, recovery of a killed kubelet, and a `down` that leaves nothing behind on the machine.

The teardown test takes the session cluster down; the `realnode` fixture brings it back for
any test that runs after it. The crash test kills the session cluster's every process and
brings the session a new one in another state directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from loopline.cluster import process as proc
from loopline.cluster.manager import LocalCluster
from loopline.cluster.node import config, oci, prerequisites, teardown
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.state import Health, is_alive
from tests.fixtures.cluster import wait_for
from tests.realnode.conftest import RealNode, busybox_pod, http_server_script, push_archive


def _service(name: str, port: int = 80, target: int = 8080) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": target}]},
    }


def _in(namespace: str, obj: dict[str, object]) -> dict[str, object]:
    metadata = dict(obj["metadata"])  # type: ignore[call-overload]
    return {**obj, "metadata": {**metadata, "namespace": namespace}}


def _get_through_port_forward(realnode: RealNode, ns: str, target: str, port: int) -> str:
    """GET / through `kubectl port-forward <target> :<port>` from the host (the API server
    streams it to the kubelet, which enters the pod's network namespace)."""
    kubectl = realnode.kubectl
    with subprocess.Popen(
        [
            *(str(kubectl.binary), f"--kubeconfig={kubectl.kubeconfig}", f"--namespace={ns}"),
            *("port-forward", target, f":{port}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as forward:
        try:
            assert forward.stdout is not None
            line = forward.stdout.readline()
            match = re.search(r"127\.0\.0\.1:(\d+)", line)
            assert match, f"port-forward said {line!r}"
            url = f"http://127.0.0.1:{match.group(1)}/"
            with urllib.request.urlopen(url, timeout=10) as resp:
                return str(resp.read().decode().strip())
        finally:
            forward.terminate()
            forward.wait(timeout=10)


def test_pod_runs_with_logs_exec_and_port_forward(realnode: RealNode, node_namespace: str) -> None:
    ns = node_namespace
    realnode.apply(_in(ns, busybox_pod("web", http_server_script("hello-pod"), port=8080)))
    realnode.wait_pod_ready(ns, "web")

    logs = realnode.kubectl("logs", f"--namespace={ns}", "web").stdout
    assert "serving hello-pod on 8080" in logs
    assert realnode.exec(ns, "web", "cat", "/tmp/www/index.html").strip() == "hello-pod"
    pod_ip = realnode.kubectl(
        "get", "pod", "web", f"--namespace={ns}", "-o", "jsonpath={.status.podIP}"
    ).stdout
    assert pod_ip.startswith("10.42."), pod_ip  # the node's own pod network

    assert _get_through_port_forward(realnode, ns, "pod/web", 8080) == "hello-pod"


def test_service_reachable_by_cluster_ip_from_pod_and_host(
    realnode: RealNode, node_namespace: str
) -> None:
    ns = node_namespace
    realnode.apply(
        _in(ns, busybox_pod("backend", http_server_script("by-cluster-ip"), port=8080)),
        _in(ns, _service("backend")),
        _in(ns, busybox_pod("client", "exec sleep 3600")),
    )
    realnode.wait_pod_ready(ns, "backend")
    realnode.wait_pod_ready(ns, "client")
    ip = realnode.kubectl(
        "get", "service", "backend", f"--namespace={ns}", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert ip.startswith("10.0."), ip

    from_pod = realnode.exec(ns, "client", "wget", "-qO-", f"http://{ip}/")
    assert from_pod.strip() == "by-cluster-ip"
    with urllib.request.urlopen(f"http://{ip}/", timeout=10) as resp:  # kube-proxy's OUTPUT rules
        assert resp.read().decode().strip() == "by-cluster-ip"


def test_service_reachable_by_dns_name_from_pod(realnode: RealNode, node_namespace: str) -> None:
    ns = node_namespace
    realnode.apply(
        _in(ns, busybox_pod("named", http_server_script("by-dns-name"), port=8080)),
        _in(ns, _service("named")),
        _in(ns, busybox_pod("asker", "exec sleep 3600")),
    )
    realnode.wait_pod_ready(ns, "named")
    realnode.wait_pod_ready(ns, "asker")

    resolv = realnode.exec(ns, "asker", "cat", "/etc/resolv.conf")
    assert f"nameserver {config.DEFAULT_CLUSTER_DNS}" in resolv
    assert f"search {ns}.svc.cluster.local" in resolv
    fqdn = f"named.{ns}.svc.cluster.local"
    ip = realnode.kubectl(
        "get", "service", "named", f"--namespace={ns}", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert ip in realnode.exec(ns, "asker", "nslookup", fqdn)
    # The short name goes through the search path, as in any pod.
    assert realnode.exec(ns, "asker", "wget", "-qO-", "http://named/").strip() == ("by-dns-name")
    assert realnode.exec(ns, "asker", "wget", "-qO-", f"http://{fqdn}/").strip() == ("by-dns-name")
    # From the host, by the Service's name, through a port-forward.
    assert _get_through_port_forward(realnode, ns, "service/named", 80) == "by-dns-name"


def test_node_pulls_an_image_pushed_to_the_local_registry(
    realnode: RealNode, node_namespace: str, tmp_path: Path
) -> None:
    ns = node_namespace
    tag = os.urandom(4).hex()
    archive = tmp_path / "image.tar"
    archive.write_bytes(oci.archive(oci.busybox_image(f"loopline.local/pushed:{tag}")))
    reference = f"{realnode.registry}/loopline-tests/busybox:{tag}"
    push_archive(archive, reference)

    script = "echo pulled-from-registry && exec sleep 3600"
    realnode.apply(_in(ns, busybox_pod("pulled", script, image=reference, pull_policy="Always")))
    realnode.wait_pod_ready(ns, "pulled")
    events = realnode.kubectl(
        "get", "events", f"--namespace={ns}", "--field-selector=involvedObject.name=pulled"
    ).stdout
    assert f'Successfully pulled image "{reference}"' in events
    assert "pulled-from-registry" in realnode.kubectl("logs", f"--namespace={ns}", "pulled").stdout


def test_node_comes_back_after_its_kubelet_is_killed(
    realnode: RealNode, node_namespace: str
) -> None:
    ns = node_namespace
    realnode.apply(_in(ns, busybox_pod("survivor", "exec sleep 3600")))
    realnode.wait_pod_ready(ns, "survivor")
    kubelet = realnode.state.process("kubelet")

    os.kill(kubelet.pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(kubelet), timeout=30, what="the kubelet to die")
    status = realnode.local.status()
    assert status.health is Health.STALE
    assert status.dead == ["kubelet"]

    result = realnode.local.up(runtime="containerd")
    assert result.restarted == ["kubelet"]
    assert realnode.local.status().health is Health.RUNNING
    # The pod the old kubelet started kept running (its container was not restarted),
    # and the new kubelet runs new pods.
    restarts = realnode.kubectl(
        "get",
        "pod",
        "survivor",
        f"--namespace={ns}",
        "-o",
        "jsonpath={.status.containerStatuses[0].restartCount}",
    ).stdout
    assert restarts == "0"
    realnode.apply(_in(ns, busybox_pod("newcomer", "exec sleep 3600")))
    realnode.wait_pod_ready(ns, "newcomer")
    realnode.wait_pod_ready(ns, "survivor", timeout=60)


def _sleepers(seconds: str) -> list[int]:
    """Host pids of the containers' `sleep <seconds>` processes (seen from the host's PID
    namespace, as an operator with a shell on the node sees them)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if (p.info["cmdline"] or [])[-2:] == ["sleep", seconds]:
            found.append(p.pid)
    return found


def test_a_container_killed_by_its_pid_is_restarted_by_the_kubelet(
    realnode: RealNode, node_namespace: str
) -> None:
    ns = node_namespace
    realnode.apply(_in(ns, busybox_pod("crasher", "exec sleep 3599")))
    realnode.wait_pod_ready(ns, "crasher")
    (pid,) = wait_for(lambda: _sleepers("3599"), timeout=30, what="the container's process")
    os.kill(pid, signal.SIGKILL)

    def restarted() -> int | None:
        count = realnode.kubectl(
            "get",
            "pod",
            "crasher",
            f"--namespace={ns}",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ).stdout.strip()
        return int(count) if count and int(count) >= 1 else None

    assert wait_for(restarted, timeout=90, what="the kubelet to restart the container") == 1
    realnode.wait_pod_ready(ns, "crasher", timeout=60)
    (again,) = wait_for(lambda: _sleepers("3599"), timeout=30, what="the restarted process")
    assert again != pid


def _chains(saved: dict[str, str]) -> set[str]:
    return {
        f"{table}:{line[1:].split()[0]}"
        for table, text in saved.items()
        for line in text.splitlines()
        if line.startswith(":")
    }


def test_down_leaves_no_processes_mounts_links_or_rules(
    realnode: RealNode, node_namespace: str
) -> None:
    ns = node_namespace
    realnode.apply(
        _in(ns, busybox_pod("lingering", http_server_script("x"), port=8080)),
        _in(ns, _service("lingering")),
    )
    realnode.wait_pod_ready(ns, "lingering")
    state = realnode.state
    layout = realnode.local.node_layout
    socket = layout.containerd_socket
    shims = teardown.node_processes(socket)
    assert shims, "a running pod has shim and container processes"
    assert teardown.mounts_under(layout.root), "a running pod has mounts under the state dir"
    assert teardown.link_exists(config.BRIDGE)

    realnode.local.down()

    assert not realnode.local.state_dir.exists()
    assert [r.name for r in state.processes if is_alive(r)] == []
    assert [p for p in shims if Path(f"/proc/{p}").exists() and proc_alive(p)] == []
    assert teardown.shim_pids(socket) == []
    assert teardown.mounts_under(realnode.local.state_dir) == []
    assert not teardown.link_exists(config.BRIDGE)
    saved = teardown.iptables_save()
    ours = [
        line
        for text in saved.values()
        for line in text.splitlines()
        if "KUBE-" in line or f'"{config.CNI_NETWORK}"' in line
    ]
    assert ours == []
    before = {c.split(":", 1)[1] for c in _chains(saved)} - realnode.chains_before
    assert before == set(), f"chains left that were not there before up: {before}"
    assert not any(Path("/sys/fs/cgroup").glob("*/kubepods"))
    for name in ("registry", "coredns"):
        assert not any(r.name == name and is_alive(r) for r in state.processes)
    assert proc.port_is_free(state.ports["kube-apiserver"])


def proc_alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def test_a_node_killed_without_down_is_cleaned_up_by_the_next_up(
    realnode: RealNode, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every process of the node SIGKILLed at once, as when the machine's containers are
    restarted: its pods' mounts, its bridge and kube-proxy's chains stay behind, and no
    component is left to say whose they are. The next `up`, from a new state directory,
    removes them and starts a node that runs pods."""
    realnode.apply(busybox_pod("doomed", http_server_script("x"), port=8080))
    realnode.wait_pod_ready("default", "doomed")
    crashed = realnode.local
    layout = crashed.node_layout
    shims = teardown.node_processes(layout.containerd_socket)
    assert shims
    assert teardown.link_exists(config.BRIDGE)
    for record in realnode.state.processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
    for pid in shims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not prerequisites.running_components(), timeout=30, what="the kill")
    assert teardown.mounts_under(layout.root), "the pods' mounts outlive the node"
    assert prerequisites.other_node() is None
    left = prerequisites.leftover()
    assert left is not None
    assert config.BRIDGE in left
    assert str(crashed.state_dir) in left

    realnode.local = LocalCluster(
        ClusterSettings(state_dir=tmp_path_factory.mktemp("realnode") / "state")
    )
    realnode.ensure_up()

    assert teardown.mounts_under(layout.root) == []
    assert teardown.shim_pids(layout.containerd_socket) == []
    assert prerequisites.leftover() is None
    realnode.apply(busybox_pod("reborn", http_server_script("y"), port=8080))
    realnode.wait_pod_ready("default", "reborn")
    assert realnode.exec("default", "reborn", "wget", "-qO-", "http://127.0.0.1:8080/") == "y\n"
    realnode.kubectl("delete", "pod", "reborn", "--wait=false")
    crashed.down()
    assert not crashed.state_dir.exists()
