"""Run the project-built kubectl against a kubeconfig.

Always the binary built with the apiserver (same version), never whatever `kubectl` is on
PATH: a fresh machine may have none, or one several minor versions away.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from loopline.cluster.errors import ClusterError


class KubectlError(ClusterError):
    """kubectl exited non-zero; the message carries its stderr."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_ = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"kubectl {' '.join(args)} failed ({returncode}): {stderr.strip()}")


@dataclass(frozen=True)
class Kubectl:
    """A kubectl bound to one cluster; call it with kubectl's arguments."""

    binary: Path
    kubeconfig: Path

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(list(args), result.returncode, result.stdout, result.stderr)
        return result
