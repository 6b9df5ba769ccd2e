"""The local image registry: Debian's docker-registry (distribution 2.8) as a cluster
component.

Images are pushed to it and the real node's containerd pulls them by name
(`127.0.0.1:PORT/loopline/runtime:TAG`), as a cluster pulls from any registry. It listens on
loopback only: containerd runs on this host, and registry 2.8 binds one address. No
authentication, plain HTTP: nothing but this machine reaches it. Its storage lives in the
cache (`~/.cache/loopline/registry`), not in the cluster's state directory, so pushed images
survive `down` and `up`.

The first half builds the configuration (pure); the second starts and stops the process.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from loopline.cluster import process as proc
from loopline.cluster.errors import ClusterError
from loopline.cluster.layout import Layout
from loopline.cluster.state import ProcessRecord

PROCESS_NAME = "registry"
PORT_KEY = "registry"  # in ClusterState.ports
BINARY = Path("/usr/bin/docker-registry")
DEBIAN_PACKAGE = "docker-registry"


@dataclass(frozen=True)
class RegistryConfig:
    port: int
    storage_dir: Path
    address: str = "127.0.0.1"

    @property
    def url(self) -> str:
        """Host and port, the prefix of image names: `127.0.0.1:PORT`."""
        return f"{self.address}:{self.port}"


# -- builders (pure) -----------------------------------------------------------------------


def default_storage_dir(cache_dir: Path) -> Path:
    return cache_dir / "registry"


def config(registry: RegistryConfig) -> dict[str, object]:
    """The registry's config.yml.

    The storage-driver health check makes every request, `/v2/` included, answer 503 while
    the storage directory is unusable, so `/v2/` is the health endpoint. Deletes are on so
    old tags can be cleaned up; the in-memory blob descriptor cache is the package default.
    """
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(registry.storage_dir)},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": registry.url,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }


def config_yaml(registry: RegistryConfig) -> str:
    return yaml.safe_dump(config(registry), sort_keys=False)


def command(binary: Path, config_path: Path) -> list[str]:
    return [str(binary), "serve", str(config_path)]


def containerd_hosts_toml(url: str) -> str:
    """containerd's `hosts.toml` for this registry (under `<config_path>/<url>/`): pull over
    plain HTTP, which containerd refuses unless told."""
    return (
        f'server = "http://{url}"\n\n[host."http://{url}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def image(url: str, repository: str, tag: str) -> str:
    """A full image reference in this registry, e.g. `127.0.0.1:5000/loopline/runtime:v1`."""
    return f"{url}/{repository}:{tag}"


# -- runner (I/O) --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningRegistry:
    """A started registry: record it in the cluster state so `down` stops it."""

    record: ProcessRecord
    config: RegistryConfig

    @property
    def url(self) -> str:
        return self.config.url

    @property
    def ports(self) -> dict[str, int]:
        """Entries for `ClusterState.ports`; readiness finds the registry by PORT_KEY."""
        return {PORT_KEY: self.config.port}


def config_path(layout: Layout) -> Path:
    return layout.root / "registry" / "config.yml"


def healthy(url: str, timeout: float = 2.0) -> bool:
    """`GET /v2/` answers 200 (with the distribution API header) when the registry serves
    and its storage is healthy."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/", timeout=timeout) as response:
            return bool(
                response.status == 200
                and response.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"
            )
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (urllib.error.URLError, OSError):
        return False


def find_binary(binary: Path = BINARY) -> Path:
    if binary.is_file():
        return binary
    found = shutil.which(binary.name)
    if found:
        return Path(found)
    raise ClusterError(
        f"{binary} not found: install the Debian package {DEBIAN_PACKAGE} "
        "(scripts/install-system-deps.sh installs it)"
    )


def start(
    layout: Layout,
    storage_dir: Path,
    *,
    port: int = 0,
    binary: Path = BINARY,
    timeout: float = 30.0,
) -> RunningRegistry:
    """Start the registry on 127.0.0.1 (`port` 0 picks a free one) with its storage in
    `storage_dir` (kept across restarts); returns once `/v2/` answers."""
    executable = find_binary(binary)
    if port:
        proc.ensure_port_free(port, "registry")
    registry = RegistryConfig(port=port or proc.free_ports(1)[0], storage_dir=storage_dir)
    storage_dir.mkdir(parents=True, exist_ok=True)
    path = config_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_yaml(registry))
    record = proc.start(PROCESS_NAME, command(executable, path), layout.log(PROCESS_NAME))
    try:
        proc.wait_until(record, lambda: healthy(registry.url), timeout=timeout, what="healthy")
    except BaseException:
        proc.stop(record)
        raise
    return RunningRegistry(record=record, config=registry)


def stop(record: ProcessRecord) -> None:
    proc.stop(record)
