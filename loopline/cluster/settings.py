"""Settings of the local control plane (`LOOPLINE_CLUSTER_*`).

The locations default to the core settings (`LOOPLINE_STATE_DIR`, `LOOPLINE_CACHE_DIR`), so
one variable moves everything; the few knobs here exist for tests and for people who need a
stable port or a prebuilt set of binaries.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.settings import Settings


class ClusterSettings(BaseSettings):
    """How `loopline cluster` lays out and starts the control plane."""

    model_config = SettingsConfigDict(env_prefix="LOOPLINE_CLUSTER_", extra="forbid")

    state_dir: Path | None = Field(
        default=None,
        description="Where the cluster keeps its PKI, etcd data, logs and pids; "
        "empty means `$LOOPLINE_STATE_DIR/cluster`.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Root of the binary cache; empty means `$LOOPLINE_CACHE_DIR`.",
    )
    bin_dir: Path | None = Field(
        default=None,
        description="Use the binaries in this directory as they are, instead of building them "
        "with platform/build.sh (for installs without the source tree).",
    )
    apiserver_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Fixed kube-apiserver port; 0 picks a free one at every `up`.",
    )
    start_timeout: float = Field(
        default=180.0,
        gt=0,
        description="Seconds each component may take to become ready (a loaded 2-core "
        "machine needs tens of seconds for kube-apiserver).",
    )
    etcd_unsafe_no_fsync: bool = Field(
        default=True,
        description="Skip fsync in etcd: a throwaway local cluster trades crash safety for "
        "much faster writes on slow disks.",
    )
    project_crds: bool = Field(
        default=True,
        description="Install Loopline's own CRDs (manifests/crds) at `up`.",
    )
    apiserver_extra_args: list[str] = Field(
        default_factory=list,
        description="Extra kube-apiserver flags (JSON list), e.g. feature gates.",
    )

    def resolved_state_dir(self) -> Path:
        """The state directory, falling back to the core `state_dir`."""
        return (self.state_dir or Settings().state_dir / "cluster").expanduser()

    def resolved_cache_dir(self) -> Path:
        """The cache root, falling back to the core `cache_dir`."""
        return (self.cache_dir or Settings().cache_dir).expanduser()
