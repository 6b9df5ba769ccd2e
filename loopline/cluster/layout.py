"""Where every file of a local cluster lives inside its state directory.

One place names the paths so the command lines, the PKI writer and the state file cannot
disagree, and so `down` knows that removing the directory removes everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Paths under a cluster's state directory."""

    root: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def ca_cert(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.pki_dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.pki_dir / "apiserver.crt"

    @property
    def serving_key(self) -> Path:
        return self.pki_dir / "apiserver.key"

    @property
    def sa_key(self) -> Path:
        return self.pki_dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.pki_dir / "sa.pub"

    @property
    def etcd_ca_cert(self) -> Path:
        """etcd's own CA: separate from the cluster CA, whose key the controller-manager
        signs CSRs with, so no certificate issued through the API opens etcd."""
        return self.pki_dir / "etcd-ca.crt"

    @property
    def etcd_cert(self) -> Path:
        """etcd's serving (and peer) certificate."""
        return self.pki_dir / "etcd.crt"

    @property
    def etcd_key(self) -> Path:
        return self.pki_dir / "etcd.key"

    @property
    def etcd_client_cert(self) -> Path:
        """The client certificate kube-apiserver (and the readiness probe) present to etcd."""
        return self.pki_dir / "apiserver-etcd-client.crt"

    @property
    def etcd_client_key(self) -> Path:
        return self.pki_dir / "apiserver-etcd-client.key"

    @property
    def token_file(self) -> Path:
        return self.pki_dir / "tokens.csv"

    @property
    def etcd_data_dir(self) -> Path:
        return self.root / "etcd"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig handed to users and tests."""
        return self.root / "kubeconfig"

    @property
    def kubeconfigs_dir(self) -> Path:
        """Kubeconfigs of the controller-manager, scheduler and kwok (own identities)."""
        return self.root / "kubeconfigs"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        """Beside the state directory, not in it: `down` deletes the directory."""
        return self.root.parent / f".{self.root.name}.lock"

    def component_kubeconfig(self, component: str) -> Path:
        return self.kubeconfigs_dir / f"{component}.yaml"

    def log(self, component: str) -> Path:
        return self.logs_dir / f"{component}.log"
