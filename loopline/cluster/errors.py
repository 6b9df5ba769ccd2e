"""Errors of the local control plane, each with a message a person can act on."""

from __future__ import annotations

from pathlib import Path


class ClusterError(RuntimeError):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""


class GoNotFoundError(ClusterError):
    """The binaries are not built and there is no Go toolchain to build them."""


class BuildError(ClusterError):
    """platform/build.sh failed."""


class MissingBinariesError(ClusterError):
    """A configured binary directory lacks a binary."""


class PortInUseError(ClusterError):
    """A loopback port the cluster needs is taken by another process."""


class ComponentStartError(ClusterError):
    """A component exited (or never became ready) during `up`; carries its log tail."""

    def __init__(self, component: str, reason: str, log: Path, log_tail: str) -> None:
        self.component = component
        self.log = log
        self.log_tail = log_tail
        super().__init__(
            f"{component} {reason}. Last lines of {log}:\n{log_tail}"
            if log_tail
            else f"{component} {reason} (its log {log} is empty)."
        )


class CrdInstallError(ClusterError):
    """The cluster runs, but applying CRD manifests failed (usually an invalid CRD)."""


class RecoveryError(ClusterError):
    """Restarting the dead processes of an existing cluster failed; nothing was deleted."""
