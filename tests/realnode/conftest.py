"""Fixtures for the real-node tier: one containerd cluster (`loopline cluster up --runtime
containerd`) per test session, in a temporary state directory, taken down at the end.

The tier needs root (containers, mounts, iptables) and Debian's containerd and runc; without
them every test here is skipped with the reason. Nothing is pulled from the internet: test
pods run a tiny image of Debian's static busybox packed by loopline.cluster.node.oci and
imported into the node's containerd, and the registry test pushes that image to the
cluster's own registry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from loopline.cluster.kubectl import Kubectl
from loopline.cluster.manager import LocalCluster
from loopline.cluster.node import oci, prerequisites, runner, teardown
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.state import ClusterState, Health
from loopline.cluster.versions import REPO_ROOT
from loopline.ports import port_is_free
from tests.fixtures.cluster import wait_for

LAST = "test_demo_on_node.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The cluster demo right after the other real-node tests: its teardown takes the
    session's node down (and checks nothing is left), so nothing may need the node after it."""
    last = [i for i in items if Path(str(i.fspath)).name == LAST]
    if not last:
        return
    rest = [i for i in items if Path(str(i.fspath)).name != LAST]
    on_node = [n for n, i in enumerate(rest) if "realnode" in Path(str(i.fspath)).parts]
    at = on_node[-1] + 1 if on_node else len(rest)
    items[:] = [*rest[:at], *last, *rest[at:]]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the real node runs containers, mounts and iptables rules: needs root"
    path = prerequisites.search_path()
    absent = [c for c in ("containerd", "runc") if shutil.which(c, path=path) is None]
    if absent:
        return f"{' and '.join(absent)} not installed (make system-deps installs them)"
    if not oci.BUSYBOX.is_file():
        return f"{oci.BUSYBOX} (Debian's busybox-static) is missing: test pods are made of it"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)

BUSYBOX_IMAGE = "loopline.local/busybox:test"


@dataclass
class RealNode:
    """The session's containerd cluster; `ensure_up` brings it back after a test took it
    down (the teardown test does)."""

    local: LocalCluster
    chains_before: set[str]
    up_seconds: list[float] = field(default_factory=list)
    # The registry's port stays the same across a down and up when it is free: skopeo
    # knows which compressed layers a registry has by its address, and a push to a new
    # address compresses every layer again (the torch layer: 3.5 GB, most of a minute).
    registry_port: int | None = None

    @property
    def state(self) -> ClusterState:
        state = self.local.state()
        assert state is not None, "the containerd cluster is not running"
        return state

    @property
    def kubectl(self) -> Kubectl:
        return Kubectl(self.state.bin_dir / "kubectl", self.local.kubeconfig_path)

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.state.ports['registry']}"

    def ensure_up(self) -> None:
        if self.local.status().health is Health.RUNNING:
            return
        started = time.monotonic()
        port = (
            self.registry_port if self.registry_port and port_is_free(self.registry_port) else None
        )
        self.local.up(runtime="containerd", registry_port=port)
        self.up_seconds.append(time.monotonic() - started)
        self.registry_port = self.state.ports["registry"]
        runner.import_image(self.local.node_layout, oci.busybox_image(BUSYBOX_IMAGE))

    def apply(self, *objects: dict[str, object]) -> None:
        items = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
        self.kubectl("apply", "-f", "-", input=json.dumps(items))

    def wait_pod_ready(self, namespace: str, name: str, timeout: float = 120) -> None:
        result = self.kubectl(
            "wait",
            f"--namespace={namespace}",
            "--for=condition=Ready",
            f"pod/{name}",
            f"--timeout={int(timeout)}s",
            check=False,
            timeout=timeout + 30,
        )
        if result.returncode != 0:
            described = self.kubectl("describe", f"--namespace={namespace}", f"pod/{name}")
            pytest.fail(f"pod {namespace}/{name} not Ready: {result.stderr}\n{described.stdout}")

    def exec(self, namespace: str, pod: str, *command: str, timeout: float = 60) -> str:
        result = self.kubectl(
            "exec", f"--namespace={namespace}", pod, "--", *command, timeout=timeout
        )
        return result.stdout


def busybox_pod(
    name: str,
    script: str,
    *,
    labels: dict[str, str] | None = None,
    image: str = BUSYBOX_IMAGE,
    pull_policy: str = "Never",
    port: int | None = None,
) -> dict[str, object]:
    """A pod of the busybox image running `sh -c script`."""
    container: dict[str, object] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["/bin/sh", "-c", script],
    }
    if port is not None:
        container["ports"] = [{"containerPort": port}]
        container["readinessProbe"] = {
            "tcpSocket": {"port": port},
            "periodSeconds": 1,
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {"app": name}},
        "spec": {
            "containers": [container],
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": False,
        },
    }


def http_server_script(text: str, port: int = 8080) -> str:
    """busybox httpd serving `text` at / (and saying so on stdout, for `kubectl logs`)."""
    return (
        f"mkdir -p /tmp/www && echo {text} > /tmp/www/index.html && "
        f"echo serving {text} on {port} && exec httpd -f -p {port} -h /tmp/www"
    )


@pytest.fixture(scope="session")
def realnode_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealNode]:
    state_dir = tmp_path_factory.mktemp("realnode") / "state"
    local = LocalCluster(ClusterSettings(state_dir=state_dir))
    node = RealNode(local=local, chains_before=teardown.chains_now())
    try:
        node.ensure_up()
        yield node
    finally:
        local.down()


@pytest.fixture
def realnode(realnode_session: RealNode) -> RealNode:
    realnode_session.ensure_up()
    return realnode_session


@pytest.fixture
def node_namespace(realnode: RealNode, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace on the real node, deleted afterwards (without waiting)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{slug}-{uuid.uuid4().hex[:6]}"
    realnode.kubectl("create", "namespace", name)
    wait_for(
        lambda: (
            realnode.kubectl(
                "get", "serviceaccount", "default", f"--namespace={name}", check=False
            ).returncode
            == 0
        ),
        timeout=60,
        what=f"ServiceAccount default in {name}",
    )
    try:
        yield name
    finally:
        if realnode.local.status().health is Health.RUNNING:
            _uninstall_releases(realnode, name)
            realnode.kubectl("delete", "namespace", name, "--wait=false", check=False)


def _uninstall_releases(realnode: RealNode, namespace: str) -> None:
    """Uninstall the Helm releases a test installed in `namespace`: their cluster-scoped
    objects (ClusterRoles, admission policies) outlive the namespace and would refuse the
    next test's release of the same name."""
    helm = [str(realnode.state.bin_dir / "helm"), f"--kubeconfig={realnode.local.kubeconfig_path}"]
    listed = subprocess.run(
        [*helm, "list", "-q", f"--namespace={namespace}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    for release in listed.stdout.split():
        subprocess.run(
            [*helm, "uninstall", release, f"--namespace={namespace}", "--wait"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )


def push_archive(archive: Path, reference: str) -> None:
    """Push an OCI archive to the cluster's plain-http registry with skopeo."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        pytest.skip("skopeo is not installed (make system-deps installs it)")
    subprocess.run(
        [
            skopeo,
            "copy",
            "--dest-tls-verify=false",
            f"oci-archive:{archive}",
            f"docker://{reference}",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _loopline(*args: str, timeout: float) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "loopline.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO_ROOT,
    )
    if result.returncode != 0:
        pytest.fail(f"loopline {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def runtime_image(realnode_session: RealNode) -> tuple[str, str]:
    """(registry/repository, tag) of this checkout's runtime image, built (a no-op when its
    content tag is in the store) and pushed to the cluster's registry."""
    for tool in ("podman", "skopeo"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make system-deps installs it)")
    realnode_session.ensure_up()
    _loopline("images", "build", "--only", "runtime", timeout=3600)
    out = _loopline(
        "images", "push", "--registry", realnode_session.registry, "--only", "runtime", timeout=900
    )
    pushed = [line.removeprefix("pushed ").strip() for line in out.splitlines()]
    pushed = [ref for ref in pushed if ref.startswith(realnode_session.registry + "/")]
    assert pushed, f"nothing pushed: {out}"
    # The content tag (version-hash) names exactly the image just built.
    reference = max(pushed, key=len)
    repository, _, tag = reference.rpartition(":")
    return repository, tag
