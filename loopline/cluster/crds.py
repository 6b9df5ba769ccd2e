"""Install CustomResourceDefinitions from folders of YAML files.

Server-side apply, because some CRDs (Seldon's Server and ServerConfig carry a whole pod
template schema) are larger than the 256 KiB annotation client-side apply would store;
then wait for `Established` so callers can create objects right away.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from loopline.cluster.kubectl import Kubectl
from loopline.cluster.versions import REPO_ROOT

PROJECT_CRD_DIR = REPO_ROOT / "manifests" / "crds"
# Installed with the CRDs: the policy that makes a ModelApproval name the user who created it
# (without it, anyone allowed to approve could approve in someone else's name).
PROJECT_POLICY_DIR = REPO_ROOT / "manifests" / "policies" / "approval"
_SUFFIXES = (".yaml", ".yml", ".json")


def manifest_files(directories: Iterable[Path]) -> list[Path]:
    """YAML/JSON files directly in the given folders, sorted, each folder in order."""
    files: list[Path] = []
    for directory in directories:
        if not directory.is_dir():
            raise FileNotFoundError(f"CRD directory {directory} does not exist")
        files.extend(sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES))
    return files


def crd_names(files: Iterable[Path]) -> list[str]:
    """metadata.name of every CustomResourceDefinition in the files."""
    names: list[str] = []
    for path in files:
        with path.open() as handle:
            for doc in yaml.safe_load_all(handle):
                if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                    names.append(str(doc["metadata"]["name"]))
    return names


def default_dirs() -> list[Path]:
    """The project's own CRDs and the admission policies that belong with them."""
    if PROJECT_CRD_DIR.is_dir() and manifest_files([PROJECT_CRD_DIR]):
        return [PROJECT_CRD_DIR, PROJECT_POLICY_DIR]
    return []


def install(kubectl: Kubectl, directories: Iterable[Path], timeout: float = 120.0) -> list[str]:
    """Apply every manifest in `directories` and wait until their CRDs are Established."""
    files = manifest_files(directories)
    if not files:
        return []
    file_args = [arg for path in files for arg in ("-f", str(path))]
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=loopline-cluster",
        *file_args,
        timeout=timeout,
    )
    names = crd_names(files)
    if names:
        kubectl(
            "wait",
            "--for=condition=Established",
            f"--timeout={int(timeout)}s",
            *(f"crd/{name}" for name in names),
            timeout=timeout + 10,
        )
    return names
