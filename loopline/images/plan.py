"""The image build as data: inputs, content hashes, tags and the commands that make them.

Nothing here touches the disk or runs a process, so what triggers a rebuild (any change of an
input, and nothing else) is testable without podman. An image's tag is
`<version>-<hash of every input>`: the same inputs give the same tag, so a tag that exists in
the store (or as an archive) is the image those inputs build.
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
BASE_REPOSITORY = "localhost/loopline/debian-base"
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
class ImagePlan:
    """One of the two images of the package: what builds it and where it is kept."""

    flavour: Flavour
    version: str
    tag: str
    build_args: Mapping[str, str]
    base: BasePlan
    context: tuple[str, ...] = field(default=())

    @property
    def repository(self) -> str:
        return f"{REPOSITORY_PREFIX}/{self.flavour}"

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def archive_name(self) -> str:
        return f"loopline-{self.flavour}-{self.tag}.oci.tar"


def build_args(
    flavour: Flavour, *, extras_available: Sequence[str], torch_index_url: str = ""
) -> dict[str, str]:
    """The Dockerfile's arguments for an image. The runtime image drops torch (and every
    `[torch]` extra) even while the base requirements still list it; the training image adds
    the `training` extra when the package defines one."""
    args: dict[str, str] = {"FLAVOUR": flavour}
    if flavour == "runtime":
        args["WITHOUT"] = "torch"
    else:
        args["EXTRAS"] = "training" if "training" in extras_available else ""
        if torch_index_url:
            args["TORCH_INDEX_URL"] = torch_index_url
    return args


def plan_image(
    flavour: Flavour,
    *,
    version: str,
    base: BasePlan,
    context: Mapping[str, bytes],
    extras_available: Sequence[str] = (),
    torch_index_url: str = "",
) -> ImagePlan:
    """The image's tag hashes the base's tag, every file of the build context (the
    Dockerfile among them), the build arguments and the version."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown image {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    if DOCKERFILE not in context:
        raise ValueError(f"the build context lacks {DOCKERFILE}")
    args = build_args(flavour, extras_available=extras_available, torch_index_url=torch_index_url)
    args["BASE_IMAGE"] = base.reference
    entries = {f"context/{name}": data for name, data in context.items()}
    entries.update({f"arg/{key}": value.encode() for key, value in args.items()})
    entries["version"] = version.encode()
    return ImagePlan(
        flavour=flavour,
        version=version,
        tag=f"{version}-{content_hash(entries)}",
        build_args=args,
        base=base,
        context=tuple(sorted(context)),
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
    plan: ImagePlan,
    *,
    context_dir: Path,
    volumes: Sequence[tuple[Path, str, bool]],
    no_cache: bool = False,
) -> list[str]:
    """`podman build` of one image. Host network: the build reaches the package index the way
    the host does. `volumes` are (host path, path in the build, read-only): the pip
    configuration, the files it names, and the wheel cache."""
    argv = [*store.podman(), "build", "--network", "host", *store.ulimits()]
    argv += ["--file", str(context_dir / DOCKERFILE), "--tag", plan.reference, "--layers"]
    for key, value in sorted(plan.build_args.items()):
        argv += ["--build-arg", f"{key}={value}"]
    for host, inside, read_only in volumes:
        argv += ["--volume", f"{host}:{inside}{':ro' if read_only else ''}"]
    if no_cache:
        argv.append("--no-cache")
    argv.append(str(context_dir))
    return argv


def save_command(store: Store, plan: ImagePlan, archive: Path) -> list[str]:
    return [
        *store.podman(),
        "save",
        "--format",
        "oci-archive",
        "--output",
        str(archive),
        plan.reference,
    ]


def load_command(store: Store, archive: Path) -> list[str]:
    return [*store.podman(), "load", "--input", str(archive)]


def exists_command(store: Store, reference: str) -> list[str]:
    return [*store.podman(), "image", "exists", reference]


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if not registry.startswith("[") else registry
    return host in {"localhost", "[::1]"} or host.startswith("127.")


def push_commands(archive: Path, plan: ImagePlan, registry: str) -> list[list[str]]:
    """skopeo copies of the archive to `registry` under its content tag and its version (the
    chart's default tag is the version). A loopback registry speaks plain http."""
    if not registry or "/" in registry.split(":", 1)[0]:
        raise ValueError(f"--registry wants HOST:PORT, got {registry!r}")
    tls = ["--dest-tls-verify=false"] if is_loopback(registry) else []
    return [
        [
            "skopeo",
            "copy",
            "--quiet",
            *tls,
            f"oci-archive:{archive}",
            f"docker://{registry}/loopline/{plan.flavour}:{tag}",
        ]
        for tag in (plan.tag, plan.version)
    ]
