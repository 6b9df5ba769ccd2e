"""The chart on a real node: the runtime image, built with `loopline images build` and
pushed to the cluster's registry, runs the operator as the chart deploys it, and the pod's
hardening holds in the running container (not only in the rendered YAML): it runs as user
10001, its root filesystem is read-only, and it has no effective capabilities.

The backends that need servers this machine has none of are off (KFP, Seldon); MLflow has
no authentication, so the chart asks for no Secret.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loopline.cluster.versions import REPO_ROOT
from tests.realnode.conftest import RealNode

CHART = REPO_ROOT / "helm" / "loopline"
RELEASE = "loopline"


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
    """(registry/repository, tag) of the runtime image in the cluster's registry."""
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


def test_operator_runs_hardened_from_the_local_registry(
    realnode: RealNode, node_namespace: str, runtime_image: tuple[str, str], tmp_path: Path
) -> None:
    ns = node_namespace
    repository, tag = runtime_image
    registry = repository.split("/", 1)[0]
    values = {
        "image": {"registry": registry, "tag": tag},
        "backends": {
            "mlflow": {"auth": "none"},
            "kfp": {"enabled": False},
            "seldon": {"enabled": False},
        },
    }
    values_file = tmp_path / "values.json"
    values_file.write_text(json.dumps(values))
    state = realnode.state
    helm = subprocess.run(
        [
            *(str(state.bin_dir / "helm"), f"--kubeconfig={realnode.local.kubeconfig_path}"),
            *("install", RELEASE, str(CHART), f"--namespace={ns}", f"--values={values_file}"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert helm.returncode == 0, helm.stderr

    selector = "app.kubernetes.io/component=operator"
    realnode.kubectl(
        "wait",
        f"--namespace={ns}",
        "--for=create",
        "pod",
        f"--selector={selector}",
        "--timeout=60s",
        timeout=90,
    )
    pod = realnode.kubectl(
        "get", "pods", f"--namespace={ns}", f"--selector={selector}", "-o", "name"
    ).stdout.split()[0]
    name = pod.removeprefix("pod/")
    realnode.wait_pod_ready(ns, name, timeout=600)  # a first pull of a 1.4 GB image
    image = realnode.kubectl(
        "get", pod, f"--namespace={ns}", "-o", "jsonpath={.status.containerStatuses[0].image}"
    ).stdout
    assert image == f"{repository}:{tag}"

    assert realnode.exec(ns, name, "id", "-u").strip() == "10001"
    write = realnode.kubectl(
        "exec", f"--namespace={ns}", name, "--", "sh", "-c", "echo x > /probe", check=False
    )
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    status = realnode.exec(ns, name, "cat", "/proc/self/status")
    caps = {
        line.split(":")[0]: line.split(":")[1].strip()
        for line in status.splitlines()
        if line.startswith("Cap")
    }
    assert int(caps["CapEff"], 16) == 0
    assert int(caps["CapPrm"], 16) == 0
    assert "NoNewPrivs:\t1" in status
