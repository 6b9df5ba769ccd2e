"""The pinned versions of the control plane, read from `platform/versions.env`.

`platform/build.sh` and Python read the same file, so the binary directory Python looks in
is always the one the build script writes to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PLATFORM_DIR = REPO_ROOT / "platform"
VERSIONS_FILE = PLATFORM_DIR / "versions.env"
BUILD_SCRIPT = PLATFORM_DIR / "build.sh"


@dataclass(frozen=True)
class Pins:
    """The versions `platform/build.sh` builds."""

    kubernetes: str
    etcd: str
    kwok: str
    helm: str

    @property
    def bin_subdir(self) -> str:
        """The cache sub-directory: keyed by Kubernetes version, as build.sh does."""
        return f"k8s-{self.kubernetes}"


def parse_versions_env(text: str) -> dict[str, str]:
    """Parse the `KEY=value` lines of a shell env file (comments and blanks ignored)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"not a KEY=value line: {raw!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def pins_from_text(text: str) -> Pins:
    """The pins in a versions.env text; every pin must be present."""
    values = parse_versions_env(text)
    try:
        return Pins(
            kubernetes=values["KUBERNETES_VERSION"],
            etcd=values["ETCD_VERSION"],
            kwok=values["KWOK_VERSION"],
            helm=values["HELM_VERSION"],
        )
    except KeyError as exc:
        raise ValueError(f"versions.env lacks {exc.args[0]}") from exc


def load_pins(path: Path = VERSIONS_FILE) -> Pins:
    """The pins of this source tree."""
    return pins_from_text(path.read_text())
