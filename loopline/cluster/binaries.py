"""Find the control-plane binaries, building them with platform/build.sh when needed.

The build is a shell script rather than Python so `make controlplane` and CI can run it
without a virtualenv; Python only decides when to call it and turns its failures into
errors that say what to do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from loopline.cluster.errors import BuildError, GoNotFoundError, MissingBinariesError
from loopline.cluster.settings import ClusterSettings
from loopline.cluster.versions import BUILD_SCRIPT, VERSIONS_FILE, Pins, load_pins

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "helm",
)
_GO_EXIT_CODE = 3  # build.sh's "no Go toolchain"


@dataclass(frozen=True)
class Binaries:
    """A directory holding every binary in BINARIES."""

    bin_dir: Path
    kubernetes_version: str

    def __getitem__(self, name: str) -> Path:
        if name not in BINARIES:
            raise KeyError(name)
        return self.bin_dir / name

    @property
    def kubectl(self) -> Path:
        return self["kubectl"]

    @property
    def helm(self) -> Path:
        return self["helm"]

    def missing(self) -> list[str]:
        return [name for name in BINARIES if not os.access(self[name], os.X_OK)]


def find_go() -> str | None:
    """The go command build.sh would use: $GO, go on PATH, or the standard install path."""
    for candidate in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def cache_bin_dir(settings: ClusterSettings, pins: Pins) -> Path:
    """Where build.sh puts the binaries for these pins."""
    return settings.resolved_cache_dir() / pins.bin_subdir / "bin"


def build(settings: ClusterSettings, *, force: bool = False, quiet: bool = False) -> None:
    """Run platform/build.sh; it is a quick no-op when the stamp matches the pins."""
    if not BUILD_SCRIPT.is_file():
        raise MissingBinariesError(
            f"{BUILD_SCRIPT} is missing: building the control plane needs a Loopline source "
            "checkout; otherwise set LOOPLINE_CLUSTER_BIN_DIR to a directory holding "
            + ", ".join(BINARIES)
        )
    env = dict(os.environ)
    env["LOOPLINE_CACHE_DIR"] = str(settings.resolved_cache_dir())
    argv = ["bash", str(BUILD_SCRIPT), *(["--force"] if force else [])]
    # Progress (on build.sh's stderr) reaches the user as it happens, inherited: a cold
    # build takes many minutes.
    result = subprocess.run(
        argv,
        env=env,
        stdout=subprocess.DEVNULL if quiet else None,
        stderr=subprocess.PIPE if quiet else None,
        text=True,
        check=False,
    )
    if result.returncode == _GO_EXIT_CODE:
        raise GoNotFoundError(
            "The Kubernetes control plane is built from source and needs Go >= 1.26, which "
            "was not found (looked at $GO, PATH and /usr/local/go/bin/go). Install Go, or "
            "set LOOPLINE_CLUSTER_BIN_DIR to prebuilt binaries. See docs/control-plane.md."
        )
    if result.returncode != 0:
        detail = f":\n{result.stderr[-4000:]}" if quiet and result.stderr else ""
        raise BuildError(f"platform/build.sh failed with exit code {result.returncode}{detail}")


def ensure(settings: ClusterSettings | None = None, *, build_if_needed: bool = True) -> Binaries:
    """The binaries to run, building them first when this is a source checkout.

    Without Go, binaries already in the cache are used as they are (their stamp cannot be
    checked without `go version`); only a missing binary makes Go necessary.
    """
    settings = settings or ClusterSettings()
    if settings.bin_dir is not None:
        binaries = Binaries(settings.bin_dir.expanduser(), "unknown")
        if missing := binaries.missing():
            raise MissingBinariesError(
                f"LOOPLINE_CLUSTER_BIN_DIR={settings.bin_dir} lacks {', '.join(missing)}"
            )
        return binaries
    if not VERSIONS_FILE.is_file():
        raise MissingBinariesError(
            f"{VERSIONS_FILE} not found: without a source checkout, set "
            "LOOPLINE_CLUSTER_BIN_DIR to a directory holding " + ", ".join(BINARIES)
        )
    pins = load_pins()
    binaries = Binaries(cache_bin_dir(settings, pins), pins.kubernetes)
    if build_if_needed and (find_go() is not None or binaries.missing()):
        build(settings)
    if missing := binaries.missing():
        raise MissingBinariesError(
            f"{binaries.bin_dir} lacks {', '.join(missing)}; run `loopline cluster build`"
        )
    return binaries
