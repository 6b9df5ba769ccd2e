"""The image build as data: inputs, content hashes, tags and the commands that make them.

Nothing here touches the disk or runs a process, so what triggers a rebuild (any change of an
input, and nothing else) is testable without podman. An image's tag is
`<version>-<hash of every input>`: the same inputs give the same tag, so a tag that exists in
the store is the image those inputs build.

Three things are built: the runtime image (docker/loopline.Dockerfile), the torch layer
(docker/torch-layer.Dockerfile: the `training` extra's closure, whose inputs are the base, the
lock and the two requirement lists only) and the training image, composed of the two
(loopline/images/compose.py): its tag hashes the runtime image's tag and the torch layer's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Flavour = Literal["runtime", "training"]
FLAVOURS: tuple[Flavour, ...] = ("runtime", "training")

DOCKERFILE = "docker/loopline.Dockerfile"
DOCKERIGNORE = "docker/loopline.Dockerfile.dockerignore"
BASE_SCRIPT = "docker/debian-base.sh"
BASE_PACKAGES = "docker/debian-base.packages"
TORCH_DOCKERFILE = "docker/torch-layer.Dockerfile"
CLOSURE_SCRIPT = "docker/closure.py"
LOCK = "requirements/lock.txt"
BASE_REPOSITORY = "localhost/loopline/debian-base"
TORCH_LAYER_REPOSITORY = "localhost/loopline/torch-layer"
REPOSITORY_PREFIX = "localhost/loopline"
# Where the build's pip writes its wheel cache (a volume: torch is downloaded once).
PIP_CACHE_IN_BUILD = "/var/cache/loopline-pip"
HASH_LENGTH = 12


def content_hash(entries: Mapping[str, bytes]) -> str:
    """A hash of named contents, independent of their order, that changes when a name or a
    content changes (each entry is length-prefixed, so no two inputs run together)."""
    digest = hashlib.sha256()
    for name in sorted(entries):
        data = entries[name]
        for part in (name.encode(), data):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return digest.hexdigest()[:HASH_LENGTH]


def context_patterns(dockerignore: str) -> list[str]:
    """The paths the build context holds: the `!path` lines of an allow-list dockerignore
    (one that starts by excluding `*`). The same list feeds the hash and the staged context,
    so what podman sees is exactly what was hashed."""
    lines = [line.strip() for line in dockerignore.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines or lines[0] != "*":
        raise ValueError(f"{DOCKERIGNORE} must start with `*` and list what the build needs")
    return [line[1:].rstrip("/") for line in lines[1:] if line.startswith("!")]


@dataclass(frozen=True)
class BasePlan:
    """loopline/debian-base: mmdebstrap's bookworm minbase with Python, from apt sources."""

    tag: str
    script: str
    packages_file: str
    sources: tuple[Path, ...]

    @property
    def reference(self) -> str:
        return f"{BASE_REPOSITORY}:{self.tag}"


def plan_base(
    *, script: bytes, packages: bytes, sources: Mapping[str, bytes], source_paths: Sequence[Path]
) -> BasePlan:
    """The base image's tag hashes its script, package list and apt sources (by content)."""
    entries = {BASE_SCRIPT: script, BASE_PACKAGES: packages}
    entries.update({f"sources/{name}": data for name, data in sources.items()})
    return BasePlan(
        tag=content_hash(entries),
        script=BASE_SCRIPT,
        packages_file=BASE_PACKAGES,
        sources=tuple(source_paths),
    )


@dataclass(frozen=True)
class TorchLayerPlan:
    """The training image's torch layer: a one-layer image of the `training` extra's closure
    over the runtime requirements. `context` is the staged build context by file name."""

    tag: str
    build_args: Mapping[str, str]
    context: Mapping[str, bytes]

    @property
    def reference(self) -> str:
        return f"{TORCH_LAYER_REPOSITORY}:{self.tag}"


@dataclass(frozen=True)
class ImagePlan:
    """One of the two images of the package: what builds it and where it is kept. The
    training image is built of `runtime` (the runtime image's plan) and `torch_layer`."""

    flavour: Flavour
    version: str
    tag: str
    build_args: Mapping[str, str]
    base: BasePlan
    context: tuple[str, ...] = field(default=())
    runtime: ImagePlan | None = None
    torch_layer: TorchLayerPlan | None = None

    @property
    def repository(self) -> str:
        return f"{REPOSITORY_PREFIX}/{self.flavour}"

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"


# The runtime image leaves torch out (and every `[torch]` extra) even while the base
# requirements still list it; its build arguments.
RUNTIME_ARGS = {"FLAVOUR": "runtime", "WITHOUT": "torch"}


def plan_runtime(*, version: str, base: BasePlan, context: Mapping[str, bytes]) -> ImagePlan:
    """The runtime image's tag hashes the base's tag, every file of the build context (the
    Dockerfile among them), the build arguments and the version."""
    if DOCKERFILE not in context:
        raise ValueError(f"the build context lacks {DOCKERFILE}")
    args = dict(RUNTIME_ARGS)
    args["BASE_IMAGE"] = base.reference
    entries = {f"context/{name}": data for name, data in context.items()}
    entries.update({f"arg/{key}": value.encode() for key, value in args.items()})
    entries["version"] = version.encode()
    return ImagePlan(
        flavour="runtime",
        version=version,
        tag=f"{version}-{content_hash(entries)}",
        build_args=args,
        base=base,
        context=tuple(sorted(context)),
    )


def plan_torch_layer(
    *,
    base: BasePlan,
    dockerfile: bytes,
    closure_script: bytes,
    lock: bytes,
    runtime_requirements: Sequence[str],
    training_requirements: Sequence[str],
    torch_index_url: str = "",
) -> TorchLayerPlan:
    """The torch layer's tag hashes its inputs and nothing else: the base's tag, its
    Dockerfile and closure script, the lock, the requirement lists (as docker/requirements.py
    reads them off pyproject.toml, so a new sub-package in pyproject.toml does not rebuild it)
    and the torch index. A source change leaves it alone."""
    context = {
        "Dockerfile": dockerfile,
        "closure.py": closure_script,
        "lock.txt": lock,
        "runtime.txt": "".join(f"{line}\n" for line in runtime_requirements).encode(),
        "training.txt": "".join(f"{line}\n" for line in training_requirements).encode(),
    }
    args = {"BASE_IMAGE": base.reference}
    if torch_index_url:
        args["TORCH_INDEX_URL"] = torch_index_url
    entries = {f"context/{name}": data for name, data in context.items()}
    entries.update({f"arg/{key}": value.encode() for key, value in args.items()})
    return TorchLayerPlan(tag=content_hash(entries), build_args=args, context=context)


def plan_training(runtime: ImagePlan, torch_layer: TorchLayerPlan, composition: str) -> ImagePlan:
    """The training image is the runtime image and the torch layer, composed: its tag
    hashes theirs and the composition's version."""
    entries = {
        "runtime": runtime.tag.encode(),
        "torch-layer": torch_layer.tag.encode(),
        "composition": composition.encode(),
    }
    return ImagePlan(
        flavour="training",
        version=runtime.version,
        tag=f"{runtime.version}-{content_hash(entries)}",
        build_args={},
        base=runtime.base,
        context=runtime.context,
        runtime=runtime,
        torch_layer=torch_layer,
    )


@dataclass(frozen=True)
class Store:
    """podman's storage for Loopline's images, outside the clone and the system's store."""

    root: Path
    runroot: Path
    # Container limits no higher than this sandbox allows (podman's defaults are higher,
    # and runc cannot raise them here without CAP_SYS_RESOURCE).
    nofile: int = 20000
    nproc: int = 32768

    def podman(self) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ]

    def ulimits(self) -> list[str]:
        return [
            "--ulimit",
            f"nofile={self.nofile}:{self.nofile}",
            "--ulimit",
            f"nproc={self.nproc}:{self.nproc}",
        ]


def base_command(plan: BasePlan, repo: Path, output: Path) -> list[str]:
    return [
        str(repo / plan.script),
        str(output),
        str(repo / plan.packages_file),
        *(str(path) for path in plan.sources),
    ]


def import_command(store: Store, plan: BasePlan, tarball: Path) -> list[str]:
    return [
        *store.podman(),
        "import",
        "--change",
        "ENV LANG=C.UTF-8",
        "--change",
        'CMD ["/bin/bash"]',
        "--message",
        f"loopline/debian-base {plan.tag} (mmdebstrap bookworm minbase)",
        str(tarball),
        plan.reference,
    ]


def build_command(
    store: Store,
    reference: str,
    *,
    dockerfile: Path,
    build_args: Mapping[str, str],
    context_dir: Path,
    volumes: Sequence[tuple[Path, str, bool]],
    no_cache: bool = False,
    layers: bool = True,
) -> list[str]:
    """`podman build` of the runtime image or the torch layer. Host network: the build reaches
    the package index the way the host does. `volumes` are (host path, path in the build,
    read-only): the pip configuration, the files it names, and the wheel cache. `layers`
    keeps each step as a cached layer; the torch layer's build does not (its closure stage
    is a 6 GB venv that would stay in the store for nothing: the finished layer is cached by
    its tag)."""
    argv = [*store.podman(), "build", "--network", "host", *store.ulimits()]
    argv += ["--file", str(dockerfile), "--tag", reference, f"--layers={str(layers).lower()}"]
    for key, value in sorted(build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for host, inside, read_only in volumes:
        argv += ["--volume", f"{host}:{inside}{':ro' if read_only else ''}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(context_dir))
    return argv


def storage_reference(store: Store, reference: str) -> str:
    """An image of the store as skopeo names it (containers-storage with this store's paths)."""
    return f"containers-storage:[overlay@{store.root}+{store.runroot}]{reference}"


def inspect_commands(store: Store, reference: str) -> tuple[list[str], list[str]]:
    """skopeo commands that print an image's manifest and its config, as stored (the store
    keeps layers uncompressed, so the manifest lists them by their diff ids)."""
    source = storage_reference(store, reference)
    return (
        ["skopeo", "inspect", "--raw", source],
        ["skopeo", "inspect", "--raw", "--config", source],
    )


def import_layout_command(store: Store, layout: Path, name: str, reference: str) -> list[str]:
    """Copy an image of an OCI layout into the store (which reuses the layers it holds)."""
    return [
        "skopeo",
        "copy",
        "--quiet",
        f"oci:{layout}:{name}",
        storage_reference(store, reference),
    ]


def check_training_command(store: Store, reference: str) -> list[str]:
    """`podman run` of the composed training image: torch and every loopline command import
    (the layers above the torch layer did not hide it), as uid 10001 without network."""
    return [
        *store.podman(),
        "run",
        "--rm",
        "--network",
        "none",
        *store.ulimits(),
        "--entrypoint",
        "python",
        reference,
        "-c",
        "import torch, loopline.cli.main; print('torch', torch.__version__)",
    ]


def exists_command(store: Store, reference: str) -> list[str]:
    return [*store.podman(), "image", "exists", reference]


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    return host in {"localhost", "[::1]"} or host.startswith("127.")


def push_commands(store: Store, plan: ImagePlan, registry: str) -> list[list[str]]:
    """skopeo copies of the image from podman's store to `registry` under its content tag and
    its version (the chart's default tag is the version). skopeo asks the registry for each
    layer first and sends only those it lacks, so a push after a source change sends the
    changed top layers. A loopback registry speaks plain http."""
    if not registry or "/" in registry.split(":", 1)[0]:
        raise ValueError(f"--registry wants HOST:PORT, got {registry!r}")
    tls = ["--dest-tls-verify=false"] if is_loopback(registry) else []
    return [
        [
            "skopeo",
            "copy",
            "--quiet",
            *tls,
            storage_reference(store, plan.reference),
            f"docker://{registry}/loopline/{plan.flavour}:{tag}",
        ]
        for tag in (plan.tag, plan.version)
    ]
