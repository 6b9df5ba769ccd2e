"""Carrying out the image plan: mmdebstrap for the base, podman for the runtime image and the
torch layer, skopeo to compose the training image and to push.

Everything lives under the cache directory (`$LOOPLINE_CACHE_DIR`, by default
~/.cache/loopline): podman's store in containers/, the logs in images/logs/, the build's wheel
cache in pip-cache/. An image whose tag is in the store is not built again. Nothing is saved as
an archive: `push` copies from the store, and skopeo sends a registry only the layers it lacks.
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

from loopline.images import compose, inputs, plan
from loopline.images.errors import BuildFailedError, ImagesError, MissingToolError
from loopline.images.plan import BasePlan, Flavour, ImagePlan, Store, TorchLayerPlan

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
    """What `build` did for one image: `built` or `cached`."""

    plan: ImagePlan
    action: str
    seconds: float


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
        runtime = plan.plan_runtime(
            version=inputs.package_version(self.repo),
            base=base,
            context=inputs.read_context(self.repo, patterns),
        )
        plans: list[ImagePlan] = []
        for flavour in only:
            if flavour == "runtime":
                plans.append(runtime)
            elif flavour == "training":
                layer = self.torch_layer_plan(base)
                plans.append(plan.plan_training(runtime, layer, compose.COMPOSITION))
            else:
                raise ImagesError(f"unknown image {flavour!r}: choose one of {plan.FLAVOURS}")
        return plans

    def torch_layer_plan(self, base: BasePlan) -> TorchLayerPlan:
        runtime, training = inputs.requirement_lists(self.repo)
        return plan.plan_torch_layer(
            base=base,
            dockerfile=(self.repo / plan.TORCH_DOCKERFILE).read_bytes(),
            closure_script=(self.repo / plan.CLOSURE_SCRIPT).read_bytes(),
            lock=(self.repo / plan.LOCK).read_bytes(),
            runtime_requirements=runtime,
            training_requirements=training,
            torch_index_url=self.torch_index_url,
        )

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

    def build(self, only: Sequence[Flavour] = plan.FLAVOURS, *, force: bool = False) -> list[Built]:
        """Build the images asked for (the training image needs the runtime image and the
        torch layer, which it builds first when they are missing). `force` rebuilds each
        without podman's layer cache, once."""
        require("podman")
        self.ensure_base(force=False)
        forced: set[str] = set() if force else {"*"}
        results: list[Built] = []
        for image in self.plans(only):
            started = time.monotonic()
            if image.flavour == "runtime":
                action = self._ensure_runtime(image, forced)
            else:
                assert image.runtime is not None
                assert image.torch_layer is not None
                require("skopeo")
                self._ensure_runtime(image.runtime, forced)
                self._ensure_torch_layer(image.torch_layer, forced)
                action = "cached"
                if self._take(forced, image.reference) or not self.exists(image.reference):
                    self._compose(image)
                    action = "built"
            results.append(Built(image, action, time.monotonic() - started))
            self.prune(image)
            if image.runtime is not None:
                self.prune(image.runtime)
        return results

    @staticmethod
    def _take(forced: set[str], reference: str) -> bool:
        """Whether `reference` is still to be rebuilt by --force (once per `build`)."""
        if "*" in forced or reference in forced:
            return False
        forced.add(reference)
        return True

    def _ensure_runtime(self, image: ImagePlan, forced: set[str]) -> str:
        no_cache = self._take(forced, image.reference)
        if not no_cache and self.exists(image.reference):
            return "cached"
        log = self._log(f"{image.flavour}-{image.tag}")
        self.echo(f"building {image.reference} (log {log})")
        with self._workdir() as workdir:
            context = workdir / "context"
            for rel in image.context:  # exactly the hashed files: what the tag stands for
                target = context / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.repo / rel, target)
            argv = plan.build_command(
                self.store,
                image.reference,
                dockerfile=context / plan.DOCKERFILE,
                build_args=image.build_args,
                context_dir=context,
                volumes=self._volumes(workdir),
                no_cache=no_cache,
            )
            self._run(argv, log, f"podman build of {image.reference}")
        return "built"

    def _ensure_torch_layer(self, layer: TorchLayerPlan, forced: set[str]) -> str:
        no_cache = self._take(forced, layer.reference)
        if not no_cache and self.exists(layer.reference):
            return "cached"
        log = self._log(f"torch-layer-{layer.tag}")
        self.echo(f"building {layer.reference}, the torch layer (log {log})")
        with self._workdir() as workdir:
            context = workdir / "context"
            context.mkdir()
            for name, data in layer.context.items():
                (context / name).write_bytes(data)
            argv = plan.build_command(
                self.store,
                layer.reference,
                dockerfile=context / "Dockerfile",
                build_args=layer.build_args,
                context_dir=context,
                volumes=self._volumes(workdir),
                no_cache=no_cache,
                layers=False,
            )
            self._run(argv, log, f"podman build of {layer.reference}")
        return "built"

    def _compose(self, image: ImagePlan) -> None:
        """The training image from the runtime image's and the torch layer's manifests,
        copied into the store (which reuses every layer: seconds), then checked: torch and
        loopline import in it."""
        assert image.runtime is not None
        assert image.torch_layer is not None
        log = self._log(f"{image.flavour}-{image.tag}")
        self.echo(f"composing {image.reference} (log {log})")
        documents: list[dict[str, object]] = []
        for reference in (image.runtime.reference, image.torch_layer.reference):
            for argv in plan.inspect_commands(self.store, reference):
                documents.append(json.loads(self._output(argv, log, f"skopeo inspect {reference}")))
        runtime_manifest, runtime_config, layer_manifest, layer_config = documents
        try:
            manifest, config = compose.compose(
                runtime_manifest, runtime_config, layer_manifest, layer_config
            )
        except compose.CompositionError as exc:
            raise ImagesError(f"cannot compose {image.reference}: {exc}") from exc
        with self._workdir() as workdir:
            for name, data in compose.layout(manifest, config, "training").items():
                (workdir / "layout" / name).parent.mkdir(parents=True, exist_ok=True)
                (workdir / "layout" / name).write_bytes(data)
            argv = plan.import_layout_command(
                self.store, workdir / "layout", "training", image.reference
            )
            self._run(argv, log, f"skopeo copy of {image.reference} into the store")
        self._run(plan.check_training_command(self.store, image.reference), log, "the check")

    def _workdir(self) -> _PathDir:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        return _PathDir(prefix="work-", dir=self.images_dir)

    def _log(self, name: str) -> Path:
        return self.images_dir / "logs" / f"{name}.log"

    def _output(self, argv: list[str], log: Path, what: str) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            with log.open("a") as out:
                out.write(f"\n$ {' '.join(argv)}\n{result.stderr}")
            raise BuildFailedError(f"{what} failed (exit {result.returncode}): {result.stderr}")
        return result.stdout

    def prune(self, current: ImagePlan) -> list[str]:
        """Remove the flavour's other tags from the store (and the torch layer's, for the
        training image), and archives an older version of this module saved; return them.

        Every source change makes a new content-hash tag, and nothing uses an old one again
        (a rollback rebuilds from the same inputs to the same tag)."""
        removed: list[str] = []
        for old in sorted(self.images_dir.glob(f"loopline-{current.flavour}-*.oci.tar")):
            old.unlink(missing_ok=True)
            removed.append(str(old))
        keep = {current.repository: current.tag}
        if current.torch_layer is not None:
            keep[plan.TORCH_LAYER_REPOSITORY] = current.torch_layer.tag
        for row in self.list():
            if row["name"] in keep and row["tag"] != keep[str(row["name"])]:
                reference = f"{row['name']}:{row['tag']}"
                argv = [*self.store.podman(), "rmi", reference]
                result = subprocess.run(argv, capture_output=True, text=True, check=False)
                if result.returncode == 0:
                    removed.append(reference)
                else:  # in use by a container, say: kept, and the build is still good
                    self.echo(f"kept {reference}: {result.stderr.strip()}")
        return removed

    def push(
        self, registry: str, only: Sequence[Flavour] = plan.FLAVOURS, *, built_only: bool = False
    ) -> list[str]:
        """Copy the images from the store to a registry; returns the references pushed.
        `built_only` skips images not built (instead of failing)."""
        require("skopeo")
        pushed: list[str] = []
        for image in self.plans(only):
            if not self.exists(image.reference):
                if built_only:
                    continue
                raise ImagesError(
                    f"{image.reference} is not built: run "
                    f"`loopline images build --only {image.flavour}` first"
                )
            try:
                commands = plan.push_commands(self.store, image, registry)
            except ValueError as exc:
                raise ImagesError(str(exc)) from exc
            for argv in commands:
                self._run(argv, self._log(f"push-{image.flavour}"), f"skopeo copy to {registry}")
                pushed.append(argv[-1].removeprefix("docker://"))
        if not pushed:
            raise ImagesError("no image is built: run `loopline images build` first")
        return pushed

    def list(self) -> list[dict[str, object]]:
        """The Loopline images in the store (the torch layer among them): name, tag, size in
        bytes."""
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
                rows.append({"name": repository, "tag": tag, "size": int(entry.get("Size", 0))})
        return sorted(rows, key=lambda row: (str(row["name"]), str(row["tag"])))


class _PathDir(tempfile.TemporaryDirectory[str]):
    """A temporary directory whose `with` value is a Path."""

    def __enter__(self) -> Path:  # type: ignore[override]
        return Path(super().__enter__())


def default_images(torch_index_url: str = "", echo: Callable[[str], None] = print) -> Images:
    from loopline.settings import get_settings

    return Images(
        inputs.repo_root(), get_settings().cache_dir, torch_index_url=torch_index_url, echo=echo
    )
