"""The runtime image, built by `loopline images build` (mmdebstrap and podman) and run by podman.

What the chart relies on, checked on the real image: it holds no torch and no CUDA library,
runs as uid/gid 10001, works with a read-only root filesystem and only /tmp and
/var/lib/loopline writable (as the chart mounts them), serves MLServer with the Loopline
runtime, and stays under 1.5 GB. `loopline images push` copies it to a real registry (Debian's
docker-registry, as the local cluster runs it).

The image is built on first use (about 7 minutes cold, seconds when its content tag is already
in the store). Building and running containers needs root here, podman and mmdebstrap.
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

import pytest

from loopline.cluster import registry
from loopline.cluster.layout import Layout
from loopline.images import inputs
from loopline.images.runner import Built, Images
from loopline.serving.seldon import MLSERVER_COMMAND
from loopline.settings import get_settings
from tests.fixtures.cluster import wait_for

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
    assert runtime.archive.is_file()


def test_a_new_build_prunes_the_flavours_old_tags_and_archives(
    images: Images, runtime: Built
) -> None:
    """Each source change is a new tag; the old ones (and their 0.45 GB archives) go, the
    current one and the other flavour stay."""
    old_tag = f"{runtime.plan.repository}:0.0.0-000000000000"
    old_archive = images.images_dir / "loopline-runtime-0.0.0-000000000000.oci.tar"
    other_archive = images.images_dir / "loopline-training-0.0.0-000000000000.oci.tar"
    subprocess.run([*images.store.podman(), "tag", runtime.plan.reference, old_tag], check=True)
    old_archive.write_bytes(b"old")
    other_archive.write_bytes(b"other flavour")
    try:
        removed = images.prune(runtime.plan)
        assert old_tag in removed
        assert str(old_archive) in removed
        assert not images.exists(old_tag)
        assert not old_archive.exists()
        assert images.exists(runtime.plan.reference)
        assert runtime.archive.is_file()
        assert other_archive.is_file()
    finally:
        other_archive.unlink(missing_ok=True)
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
    assert rows[0]["archive"] == str(runtime.archive)


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


def test_training_image_imports_torch(images: Images) -> None:
    """The training image (not built by this module: its deps layer is about 6 GB and takes
    11-20 minutes; `loopline images build --only training` builds it) holds torch."""
    (training,) = images.plans(("training",))
    if not images.exists(training.reference):
        pytest.skip(
            f"{training.reference} is not built: `loopline images build --only training` "
            "(11-20 minutes, about 20 GB free disk)"
        )
    version = _python(images, training.reference, "import torch; print(torch.__version__)")
    assert version.splitlines()[-1].startswith("2.")
    result = _run(images, training.reference, "-u", options=("--entrypoint", "id"))
    assert result.stdout.strip() == UID
