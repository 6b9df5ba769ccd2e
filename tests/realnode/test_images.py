"""The runtime image, built by `loopline images build` (mmdebstrap and podman) and run by podman.

What the chart relies on, checked on the real image: it holds no torch and no CUDA library,
runs as uid/gid 10001, works with a read-only root filesystem and only /tmp and
/var/lib/loopline writable (as the chart mounts them), serves MLServer with the Loopline
runtime, and stays under 1.5 GB. `loopline images push` copies it to a real registry (Debian's
docker-registry, as the local cluster runs it).

The training image is checked to be the runtime image's layers plus the torch layer, in
podman's store and, once pushed after the runtime image, in the registry (every blob but one
shared), and to import torch as uid 10001.

The images are built on first use (the runtime image about 9 minutes cold, the torch layer
about 15 with its 3.5 GB of wheels; seconds when their content tags are already in the store).
Building and running containers needs root here, podman, mmdebstrap and skopeo.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopline.cluster import registry
from loopline.cluster.layout import Layout
from loopline.images import inputs
from loopline.images import plan as image_plan
from loopline.images.runner import Built, Images
from loopline.serving.seldon import MLSERVER_COMMAND
from loopline.settings import get_settings
from tests.fixtures.cluster import wait_for
from tests.realnode.conftest import RealNode

_MISSING = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
if os.geteuid() != 0:
    pytest.skip(
        "building and running the images needs root (podman's store under "
        "~/.cache/loopline/containers, mmdebstrap's root mode)",
        allow_module_level=True,
    )
if _MISSING:
    pytest.skip(
        f"{', '.join(_MISSING)} not installed: apt-get install {' '.join(_MISSING)} "
        "(scripts/install-system-deps.sh)",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.realnode, pytest.mark.slow, pytest.mark.timeout(1800)]

MAX_RUNTIME_BYTES = 1_500_000_000
UID = "10001"


@pytest.fixture(scope="module")
def images() -> Images:
    return Images(inputs.repo_root(), get_settings().cache_dir, echo=lambda _: None)


@pytest.fixture(scope="module")
def runtime(images: Images) -> Built:
    """The runtime image of this checkout (built unless its content tag is in the store)."""
    (built,) = images.build(("runtime",))
    return built


def _run(
    images: Images, image: str, *args: str, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`podman run` as the chart runs the pods: read-only root, writable /tmp and
    /var/lib/loopline only (mode 0777, as an emptyDir), no network unless `options` say
    otherwise."""
    argv = [
        *images.store.podman(),
        "run",
        "--rm",
        *images.store.ulimits(),
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "--tmpfs",
        "/var/lib/loopline:rw,mode=0777",
        *(() if "--network" in options else ("--network", "none")),
        *options,
        image,
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def _python(images: Images, image: str, code: str) -> str:
    result = _run(images, image, "python", "-c", code, options=("--entrypoint", ""))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_build_again_is_cached(images: Images, runtime: Built) -> None:
    """The same inputs give the same tag, and an image in the store is not built again."""
    (again,) = images.build(("runtime",))
    assert again.action == "cached"
    assert again.plan.reference == runtime.plan.reference


def test_a_new_build_prunes_the_flavours_old_tags(images: Images, runtime: Built) -> None:
    """Each source change is a new tag; the old ones go (and the OCI archives an earlier
    version saved), the current one and the other flavour stay."""
    old_tag = f"{runtime.plan.repository}:0.0.0-000000000000"
    other_tag = "localhost/loopline/training:0.0.0-000000000000"
    old_archive = images.images_dir / "loopline-runtime-0.0.0-000000000000.oci.tar"
    images.images_dir.mkdir(parents=True, exist_ok=True)
    for tag in (old_tag, other_tag):
        subprocess.run([*images.store.podman(), "tag", runtime.plan.reference, tag], check=True)
    old_archive.write_bytes(b"old")
    try:
        removed = images.prune(runtime.plan)
        assert old_tag in removed
        assert str(old_archive) in removed
        assert not images.exists(old_tag)
        assert not old_archive.exists()
        assert images.exists(runtime.plan.reference)
        assert images.exists(other_tag)
    finally:
        subprocess.run([*images.store.podman(), "untag", runtime.plan.reference, other_tag])
        old_archive.unlink(missing_ok=True)


def test_runtime_image_has_no_torch_and_no_cuda(images: Images, runtime: Built) -> None:
    found = _python(
        images,
        runtime.plan.reference,
        "import importlib.metadata as m, importlib.util as u, json; "
        "names = sorted(d.metadata['Name'].lower() for d in m.distributions()); "
        "print(json.dumps({'torch': u.find_spec('torch') is not None, "
        "'cuda': [n for n in names if n.startswith('nvidia-') or n == 'triton'], "
        "'loopline': 'loopline' in names}))",
    )
    assert json.loads(found) == {"torch": False, "cuda": [], "loopline": True}


def test_runtime_image_runs_as_10001(images: Images, runtime: Built) -> None:
    result = _run(images, runtime.plan.reference, "-u", options=("--entrypoint", "id"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == UID
    result = _run(images, runtime.plan.reference, "-g", options=("--entrypoint", "id"))
    assert result.stdout.strip() == UID


def test_cli_runs_on_a_read_only_root(images: Images, runtime: Built) -> None:
    result = _run(images, runtime.plan.reference)  # ENTRYPOINT loopline, CMD --help
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Usage" in result.stdout
    for command in (("operator", "run"), ("monitor", "serve")):
        result = _run(images, runtime.plan.reference, *command, "--help")
        assert result.returncode == 0, result.stdout + result.stderr


def test_serving_runtime_and_monitor_import_on_a_read_only_root(
    images: Images, runtime: Built
) -> None:
    """The modules the model server and the drift monitor load, with nothing writable but
    /tmp and /var/lib/loopline; a write elsewhere (byte code, a cache) fails here."""
    out = _python(
        images,
        runtime.plan.reference,
        "import loopline.serving.runtime as r, loopline.monitoring.server as s, "
        "loopline.monitoring.detectors as d, loopline.operators.handlers as h; "
        "print(r.LooplineRuntime.__name__)",
    )
    assert out.splitlines()[-1] == "LooplineRuntime"
    # Even root cannot write outside /tmp and /var/lib/loopline: the test runs read-only.
    as_root = ("--user", "0", "--entrypoint", "sh")
    root = _run(images, runtime.plan.reference, "-c", "touch /opt/x", options=as_root)
    assert root.returncode != 0
    assert "Read-only file system" in root.stderr
    writable = "touch /tmp/x /var/lib/loopline/x && echo ok"
    assert _run(images, runtime.plan.reference, "-c", writable, options=as_root).stdout == "ok\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_seldon_command_serves_mlserver_on_a_read_only_root(
    images: Images, runtime: Built, tmp_path: Path
) -> None:
    """The command a Seldon Server's container runs in this image starts MLServer with the
    Loopline runtime, listening on the host's loopback (host network)."""
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    name = f"loopline-test-mlserver-{os.getpid()}"
    env = {
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http),
        "MLSERVER_GRPC_PORT": str(grpc),
        "MLSERVER_METRICS_PORT": str(metrics),
        "MLSERVER_PARALLEL_WORKERS": "0",
        "MLSERVER_MODELS_DIR": "/tmp/models",
    }
    argv = [
        *images.store.podman(),
        "run",
        "--detach",
        "--name",
        name,
        *images.store.ulimits(),
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "--network",
        "host",
        *(arg for key, value in env.items() for arg in ("--env", f"{key}={value}")),
        "--entrypoint",
        json.dumps(MLSERVER_COMMAND),
        runtime.plan.reference,
    ]
    started = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert started.returncode == 0, started.stderr
    try:
        wait_for(
            lambda: _live(f"http://127.0.0.1:{http}/v2/health/live"),
            timeout=120,
            what="MLServer in the runtime image answering /v2/health/live",
        )
    finally:
        logs = subprocess.run(
            [*images.store.podman(), "logs", name], capture_output=True, text=True, check=False
        )
        (tmp_path / "mlserver.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(
            [*images.store.podman(), "rm", "--force", name], capture_output=True, check=False
        )


def test_runtime_image_is_under_1_5_gb(images: Images, runtime: Built) -> None:
    rows = [row for row in images.list() if f"{row['name']}:{row['tag']}" == runtime.plan.reference]
    assert len(rows) == 1
    size = int(str(rows[0]["size"]))
    assert 0 < size < MAX_RUNTIME_BYTES, f"{runtime.plan.reference} is {size / 1e9:.2f} GB"


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[str]:
    for tool in ("skopeo", "docker-registry"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (scripts/install-system-deps.sh installs it)")
    running = registry.start(Layout(tmp_path / "cluster"), tmp_path / "registry-storage")
    try:
        yield running.url
    finally:
        registry.stop(running.record)


def test_push_to_a_local_registry(images: Images, runtime: Built, local_registry: str) -> None:
    pushed = images.push(local_registry, ("runtime",))
    plan = runtime.plan
    assert pushed == [
        f"{local_registry}/loopline/runtime:{plan.tag}",
        f"{local_registry}/loopline/runtime:{plan.version}",
    ]
    url = f"http://{local_registry}/v2/loopline/runtime/tags/list"
    with urllib.request.urlopen(url, timeout=10) as response:
        tags = json.load(response)["tags"]
    assert sorted(tags) == sorted([plan.tag, plan.version])
    # The registry serves the image under both tags as one manifest.
    digests = set()
    for tag in tags:
        inspect = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--tls-verify=false",
                f"docker://{local_registry}/loopline/runtime:{tag}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert inspect.returncode == 0, inspect.stderr
        digests.add(json.loads(inspect.stdout)["Digest"])
    assert len(digests) == 1


@pytest.fixture(scope="module")
def training(images: Images, runtime: Built) -> Built:
    """The training image of this checkout: the runtime image plus the torch layer (the layer
    is built unless its tag is in the store: the first time about 15 minutes and 6 GB of
    wheels; the composition then takes seconds)."""
    (built,) = images.build(("training",))
    return built


def _config(images: Images, reference: str) -> dict[str, Any]:
    _, argv = image_plan.inspect_commands(images.store, reference)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_training_image_is_the_runtime_image_plus_the_torch_layer(
    images: Images, runtime: Built, training: Built
) -> None:
    """Every layer but one is the runtime image's; the one is the torch layer's, right above
    the venv, and torch imports in the image as the pods' user."""
    assert training.plan.torch_layer is not None
    runtime_layers = _config(images, runtime.plan.reference)["rootfs"]["diff_ids"]
    (torch_layer,) = _config(images, training.plan.torch_layer.reference)["rootfs"]["diff_ids"]
    training_layers = _config(images, training.plan.reference)["rootfs"]["diff_ids"]
    at = training_layers.index(torch_layer)
    assert training_layers[:at] + training_layers[at + 1 :] == runtime_layers
    assert at == 3, "base, user, venv below the torch layer; the sources above it"
    version = _python(images, training.plan.reference, "import torch; print(torch.__version__)")
    assert version.splitlines()[-1].startswith("2.")
    result = _run(images, training.plan.reference, "-u", options=("--entrypoint", "id"))
    assert result.stdout.strip() == UID
    help_text = _run(images, training.plan.reference, "pipeline", "--help")
    assert help_text.returncode == 0, help_text.stderr


def test_training_push_sends_only_the_torch_layer_after_the_runtime(
    images: Images, runtime: Built, training: Built, realnode_session: RealNode
) -> None:
    """The registry holds each shared layer once: the training image's manifest names the
    runtime image's blobs (compressed, as pushed) and one more.

    The registry is the session node's: compressing the 3.5 GB torch layer for a push is most
    of a push's time, and skopeo remembers the compressed digests per registry address, so
    the closed loop on that node (test_demo_on_node.py) then finds both images there."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (scripts/install-system-deps.sh installs it)")
    realnode_session.ensure_up()
    local_registry = realnode_session.registry
    images.push(local_registry, ("runtime",))
    images.push(local_registry, ("training",))
    manifests = {}
    for flavour, plan in (("runtime", runtime.plan), ("training", training.plan)):
        inspect = subprocess.run(
            [
                "skopeo",
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{local_registry}/loopline/{flavour}:{plan.tag}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        manifests[flavour] = [layer["digest"] for layer in json.loads(inspect.stdout)["layers"]]
    extra = [d for d in manifests["training"] if d not in manifests["runtime"]]
    assert len(extra) == 1, extra
    assert [d for d in manifests["training"] if d != extra[0]] == manifests["runtime"]
