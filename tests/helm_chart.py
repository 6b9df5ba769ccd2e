"""Render the Helm chart (helm/loopline) with the project-built helm; keep its golden files.

The chart's tests and `python -m tests.helm_chart` share this module. After a chart change,
regenerate the golden files and review their diff like code:

    .venv/bin/python -m tests.helm_chart            # rewrite tests/golden/helm/*.yaml
    .venv/bin/python -m tests.helm_chart --check    # exit 1 if they differ

One golden file per values file in helm/loopline/ci/ (`<name>-values.yaml` -> `<name>.yaml`).
Content the chart takes from files other engineers own (manifests/rbac rules,
monitoring/dashboards, monitoring/rules) is replaced by a marker in the golden files, so editing
a dashboard does not break the chart's golden test; the chart tests check that content
separately against its source.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from loopline.cluster.binaries import ensure

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART_DIR = REPO_ROOT / "helm" / "loopline"
CI_VALUES_DIR = CHART_DIR / "ci"
GOLDEN_DIR = REPO_ROOT / "tests" / "golden" / "helm"
RBAC_DIR = REPO_ROOT / "manifests" / "rbac"
CRD_DIR = REPO_ROOT / "manifests" / "crds"
DASHBOARD_DIR = REPO_ROOT / "monitoring" / "dashboards"
RULES_DIR = REPO_ROOT / "monitoring" / "rules"

RELEASE = "loopline"
NAMESPACE = "loopline-system"

# helm logs this line (to stderr) for every symlink it follows; the chart links its CRDs,
# RBAC rules, dashboards and alert rules to their one source in the tree on purpose.
_SYMLINK_LOG = re.compile(r"^.*found symbolic link in path: .*\n?", re.MULTILINE)
_DOC_SPLIT = re.compile(r"^---\s*$", re.MULTILINE)


class HelmError(RuntimeError):
    """helm exited non-zero; the message is its stderr without the symlink notices."""

    def __init__(self, args: list[str], stderr: str) -> None:
        self.stderr = stderr
        super().__init__(f"helm {' '.join(args)} failed:\n{stderr.strip()}")


@functools.cache
def helm_binary() -> Path:
    """The helm built by platform/build.sh (`make controlplane`), never one on PATH."""
    return ensure(build_if_needed=False).helm


def helm(
    *args: str, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run the project-built helm; stderr loses the symlink notices."""
    result = subprocess.run(
        [str(helm_binary()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    result.stderr = _SYMLINK_LOG.sub("", result.stderr)
    if check and result.returncode != 0:
        raise HelmError(list(args), result.stderr)
    return result


def ci_values_files() -> list[Path]:
    """The values files the chart is linted, rendered and golden-tested with."""
    return sorted(CI_VALUES_DIR.glob("*-values.yaml"))


def golden_path(values_file: Path) -> Path:
    return GOLDEN_DIR / (values_file.name.removesuffix("-values.yaml") + ".yaml")


def render(*args: str, values_file: Path | None = None) -> str:
    """`helm template` of the chart as release RELEASE in NAMESPACE (CRDs not included)."""
    files = ["--values", str(values_file)] if values_file else []
    return helm("template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, *files, *args).stdout


def documents(rendered: str) -> list[dict[str, Any]]:
    """The Kubernetes objects of a rendered manifest stream."""
    return [doc for doc in yaml.safe_load_all(rendered) if isinstance(doc, dict)]


def manifest_documents(directory: Path) -> list[dict[str, Any]]:
    """The objects in the YAML files directly in `directory`, files in name order."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(documents(path.read_text()))
    return docs


BACKEND_RBAC_SUFFIXES = ("seldon", "kfp")


def operator_manifest_rules(backends: tuple[str, ...] = ("seldon", "kfp")) -> list[dict[str, Any]]:
    """The rules of the roles manifests/rbac binds to a ServiceAccount: what the chart grants
    with the given backends on (a file `<name>-<backend>.yaml` counts only with its backend)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(RBAC_DIR.glob("*.yaml")):
        suffix = path.stem.rsplit("-", 1)[-1]
        if suffix not in BACKEND_RBAC_SUFFIXES or suffix in backends:
            docs.extend(documents(path.read_text()))
    bound = {
        (doc["roleRef"]["kind"], doc["roleRef"]["name"])
        for doc in docs
        if doc.get("kind") in ("RoleBinding", "ClusterRoleBinding")
        and any(s.get("kind") == "ServiceAccount" for s in doc.get("subjects") or [])
    }
    return [
        rule
        for doc in docs
        if doc.get("kind") in ("Role", "ClusterRole")
        and (doc["kind"], doc["metadata"]["name"]) in bound
        for rule in doc.get("rules") or []
    ]


Permission = tuple[str, str, str, str]  # (apiGroup, resource, verb, resourceName or "")


def expand_rules(rules: list[dict[str, Any]]) -> set[Permission]:
    """Every (apiGroup, resource, verb, resourceName) a list of PolicyRules grants."""
    granted: set[Permission] = set()
    for rule in rules:
        for url in rule.get("nonResourceURLs") or []:
            granted.update(("", url, verb, "") for verb in rule["verbs"])
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                for verb in rule["verbs"]:
                    names = rule.get("resourceNames") or [""]
                    granted.update((group, resource, verb, name) for name in names)
    return granted


def _source(text: str) -> str:
    match = re.search(r"^# Source: (\S+)", text, re.MULTILINE)
    return match.group(1) if match else ""


def normalize(rendered: str) -> str:
    """The rendered chart with content owned outside the chart replaced by markers."""
    out: list[str] = []
    for text in _DOC_SPLIT.split(rendered):
        if not text.strip():
            continue
        source = _source(text)
        doc = yaml.safe_load(text)
        changed = False
        if isinstance(doc, dict):
            kind = doc.get("kind")
            if source.endswith("/dashboards.yaml") and kind == "ConfigMap":
                # One marker object for all: the set of dashboards is monitoring's to change.
                name = doc["metadata"]["name"]
                doc["metadata"]["name"] = name[: name.rindex("-dashboard-")] + "-dashboard-<name>"
                doc["data"] = {"<name>.json": "<monitoring/dashboards/<name>.json>, one each"}
                changed = True
            elif kind == "PrometheusRule":
                doc["spec"]["groups"] = "<the groups of monitoring/rules/*.yaml>"
                changed = True
            elif (
                source.endswith("/rbac.yaml")
                and kind in ("Role", "ClusterRole")
                and doc["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
            ):
                doc["rules"] = f"<rules of manifests/rbac for a {kind}>"
                changed = True
        if changed:
            body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
            text = f"\n# Source: {source}\n{body}"
        text = text.rstrip() + "\n"
        if text not in out:
            out.append(text)
    return "---" + "---".join(out)


def golden_render(values_file: Path) -> str:
    """What the golden file of `values_file` holds."""
    header = (
        f"# Golden render of helm/loopline with ci/{values_file.name}.\n"
        "# Regenerate: .venv/bin/python -m tests.helm_chart (see tests/helm_chart.py).\n"
    )
    return header + normalize(render(values_file=values_file))


def golden_diff(values_file: Path) -> str:
    """A unified diff from the golden file to the current render ('' when equal)."""
    path = golden_path(values_file)
    want = path.read_text() if path.is_file() else ""
    got = golden_render(values_file)
    if want == got:
        return ""
    return "".join(
        difflib.unified_diff(
            want.splitlines(keepends=True),
            got.splitlines(keepends=True),
            fromfile=str(path.relative_to(REPO_ROOT)),
            tofile="helm template (now)",
        )
    )


def regenerate() -> list[Path]:
    """Rewrite every golden file; return the ones that changed."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    for values_file in ci_values_files():
        path = golden_path(values_file)
        text = golden_render(values_file)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helm_chart", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only report differences")
    options = parser.parse_args(argv)
    if options.check:
        diffs = [diff for values in ci_values_files() if (diff := golden_diff(values))]
        sys.stdout.write("".join(diffs))
        return 1 if diffs else 0
    for path in regenerate():
        print(f"rewrote {path.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
