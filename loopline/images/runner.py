"""Carrying out the image plan: mmdebstrap for the base, podman for the images, skopeo to push.

Everything lives under the cache directory (`$LOOPLINE_CACHE_DIR`, by default
~/.cache/loopline): podman's store in containers/, the images as OCI archives in images/, the
build's wheel cache in pip-cache/. An image whose tag is in the store and whose archive exists
is not built again; one whose archive exists is loaded from it.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loopline.images import inputs, plan
from loopline.images.errors import BuildFailedError, ImagesError, MissingToolError
from loopline.images.plan import BasePlan, Flavour, ImagePlan, Store

# command -> the Debian package that installs it (requirements/debian.txt lists them).
TOOLS = {"mmdebstrap": "mmdebstrap", "podman": "podman", "skopeo": "skopeo"}


def require(command: str) -> None:
    if shutil.which(command) is None:
        raise MissingToolError(
            f"`{command}` is not installed: apt-get install {TOOLS[command]} "
            "(scripts/install-system-deps.sh installs every package in requirements/debian.txt)"
        )


@dataclass(frozen=True)
class Built:
    """What `build` did for one image: `built`, `loaded` (from its archive) or `cached`."""

    plan: ImagePlan
    action: str
    seconds: float
    archive: Path


def store_for(cache_dir: Path) -> Store:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    containers = cache_dir / "containers"
    return Store(
        root=containers / "storage",
        runroot=containers / "run",
        nofile=min(nofile, 1 << 20) if nofile != resource.RLIM_INFINITY else 1 << 20,
        nproc=min(nproc, 32768) if nproc != resource.RLIM_INFINITY else 32768,
    )


class Images:
    """The images of one checkout, built into one cache directory."""

    def __init__(
        self,
        repo: Path,
        cache_dir: Path,
        *,
        torch_index_url: str = "",
        echo: Callable[[str], None] = print,
    ) -> None:
        self.repo = repo
        self.cache_dir = cache_dir
        self.images_dir = cache_dir / "images"
        self.pip_cache = cache_dir / "pip-cache"
        self.store = store_for(cache_dir)
        self.torch_index_url = torch_index_url
        self.echo = echo

    # -- the plan ---------------------------------------------------------------------------

    def base_plan(self) -> tuple[BasePlan, str]:
        sources = inputs.debian_sources()
        path = self.images_dir / "apt" / f"{plan.content_hash({'s': sources.encode()})}.sources"
        base = plan.plan_base(
            script=(self.repo / plan.BASE_SCRIPT).read_bytes(),
            packages=(self.repo / plan.BASE_PACKAGES).read_bytes(),
            sources={"debian.sources": sources.encode()},
            source_paths=[path],
        )
        return base, sources

    def plans(self, only: Sequence[Flavour] = plan.FLAVOURS) -> list[ImagePlan]:
        base, _ = self.base_plan()
        patterns = plan.context_patterns((self.repo / plan.DOCKERIGNORE).read_text())
        context = inputs.read_context(self.repo, patterns)
        version = inputs.package_version(self.repo)
        extras = inputs.extras(self.repo)
        return [
            plan.plan_image(
                flavour,
                version=version,
                base=base,
                context=context,
                extras_available=extras,
                torch_index_url=self.torch_index_url,
            )
            for flavour in only
        ]

    def archive(self, image: ImagePlan) -> Path:
        return self.images_dir / image.archive_name

    # -- running ----------------------------------------------------------------------------

    def _run(self, argv: list[str], log: Path, what: str) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            out.write(f"\n$ {' '.join(argv)}\n".encode())
            out.flush()
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise BuildFailedError(f"{what} failed (exit {result.returncode}); log {log}:\n{tail}")

    def exists(self, reference: str) -> bool:
        argv = plan.exists_command(self.store, reference)
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    def ensure_base(self, *, force: bool = False) -> BasePlan:
        base, sources = self.base_plan()
        if not force and self.exists(base.reference):
            return base
        require("podman")
        tarball = self.images_dir / f"debian-base-{base.tag}.tar"
        log = self.images_dir / "logs" / f"debian-base-{base.tag}.log"
        if force or not tarball.is_file():
            require("mmdebstrap")
            self.echo(f"making {base.reference} with mmdebstrap")
            started = time.monotonic()
            source_file = base.sources[0]
            source_file.parent.mkdir(parents=True, exist_ok=True)
            source_file.write_text(sources)
            partial = tarball.with_suffix(".partial.tar")
            self._run(plan.base_command(base, self.repo, partial), log, "mmdebstrap")
            partial.replace(tarball)
            self.echo(f"  rootfs made in {time.monotonic() - started:.0f}s")
        self._run(plan.import_command(self.store, base, tarball), log, "podman import")
        return base

    def _volumes(self, workdir: Path) -> list[tuple[Path, str, bool]]:
        pip = inputs.host_pip_config()
        conf = workdir / "pip.conf"
        conf.write_text(pip.conf)
        self.pip_cache.mkdir(parents=True, exist_ok=True)
        volumes = [(conf, "/etc/pip.conf", True)]
        volumes += [(path, str(path), True) for path in pip.files]
        volumes.append((self.pip_cache, plan.PIP_CACHE_IN_BUILD, False))
        return volumes

    def _stage_context(self, image: ImagePlan, into: Path) -> None:
        """Copy exactly the hashed files, so the build sees what the tag stands for."""
        for rel in image.context:
            target = into / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.repo / rel, target)

    def build(self, only: Sequence[Flavour] = plan.FLAVOURS, *, force: bool = False) -> list[Built]:
        require("podman")
        self.ensure_base(force=False)
        results: list[Built] = []
        for image in self.plans(only):
            started = time.monotonic()
            archive = self.archive(image)
            in_store = self.exists(image.reference)
            if not force and in_store and archive.is_file():
                results.append(Built(image, "cached", time.monotonic() - started, archive))
                continue
            log = self.images_dir / "logs" / f"{image.flavour}-{image.tag}.log"
            if not force and archive.is_file():
                self._run(plan.load_command(self.store, archive), log, "podman load")
                action = "loaded"
            else:
                if force or not in_store:
                    self.echo(f"building {image.reference} (log {log})")
                    self._build_one(image, log, no_cache=force)
                self.echo(f"saving {archive}")
                partial = archive.with_name(archive.name + ".partial")
                partial.unlink(missing_ok=True)
                self._run(plan.save_command(self.store, image, partial), log, "podman save")
                partial.replace(archive)
                action = "built"
            results.append(Built(image, action, time.monotonic() - started, archive))
            self.prune(image)
        return results

    def prune(self, current: ImagePlan) -> list[str]:
        """Remove the flavour's other tags from the store and their archives; return them.

        Every source change makes a new content-hash tag, and nothing uses an old one again
        (a rollback rebuilds from the same inputs to the same tag), while each costs 0.45 GB
        (runtime) or 3.2 GB (training) of archive and its own layers in the store."""
        removed: list[str] = []
        for old in sorted(self.images_dir.glob(f"loopline-{current.flavour}-*.oci.tar")):
            if old.name != current.archive_name:
                old.unlink(missing_ok=True)
                removed.append(str(old))
        for row in self.list():
            if row["name"] == current.repository and row["tag"] != current.tag:
                reference = f"{row['name']}:{row['tag']}"
                argv = [*self.store.podman(), "rmi", reference]
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode == 0:
                    removed.append(reference)
                else:  # in use by a container, say: kept, and the build is still good
                    self.echo(f"kept {reference}: {result.stderr.strip()}")
        return removed

    def _build_one(self, image: ImagePlan, log: Path, *, no_cache: bool) -> None:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="context-", dir=self.images_dir) as tmp:
            workdir = Path(tmp)
            context = workdir / "context"
            self._stage_context(image, context)
            argv = plan.build_command(
                self.store,
                image,
                context_dir=context,
                volumes=self._volumes(workdir),
                no_cache=no_cache,
            )
            self._run(argv, log, f"podman build of {image.reference}")

    def push(
        self, registry: str, only: Sequence[Flavour] = plan.FLAVOURS, *, built_only: bool = False
    ) -> list[str]:
        """Copy the images' archives to a registry; returns the references pushed.
        `built_only` skips images not built (instead of failing)."""
        require("skopeo")
        pushed: list[str] = []
        for image in self.plans(only):
            archive = self.archive(image)
            if not archive.is_file() and built_only:
                continue
            if not archive.is_file():
                raise ImagesError(
                    f"{image.reference} is not built ({archive} is missing): run "
                    f"`loopline images build --only {image.flavour}` first"
                )
            log = self.images_dir / "logs" / f"push-{image.flavour}.log"
            try:
                commands = plan.push_commands(archive, image, registry)
            except ValueError as exc:
                raise ImagesError(str(exc)) from exc
            for argv in commands:
                self._run(argv, log, f"skopeo copy to {registry}")
                pushed.append(argv[-1].removeprefix("docker://"))
        if not pushed:
            raise ImagesError("no image is built: run `loopline images build` first")
        return pushed

    def list(self) -> list[dict[str, object]]:
        """The Loopline images in the store: name, tag, size in bytes, archive if exported."""
        require("podman")
        argv = [*self.store.podman(), "images", "--format", "json"]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImagesError(f"podman images failed: {result.stderr.strip()}")
        rows: list[dict[str, object]] = []
        for entry in json.loads(result.stdout or "[]"):
            for name in entry.get("Names") or []:
                repository, _, tag = name.rpartition(":")
                if not repository.startswith(plan.REPOSITORY_PREFIX + "/"):
                    continue
                flavour = repository.rsplit("/", 1)[-1]
                archive = self.images_dir / f"loopline-{flavour}-{tag}.oci.tar"
                rows.append(
                    {
                        "name": repository,
                        "tag": tag,
                        "size": int(entry.get("Size", 0)),
                        "archive": str(archive) if archive.is_file() else "",
                    }
                )
        return sorted(rows, key=lambda row: (str(row["name"]), str(row["tag"])))


def default_images(torch_index_url: str = "", echo: Callable[[str], None] = print) -> Images:
    from loopline.settings import get_settings

    return Images(
        inputs.repo_root(), get_settings().cache_dir, torch_index_url=torch_index_url, echo=echo
    )
