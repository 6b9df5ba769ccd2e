"""The chart ships what the rest of the tree defines, and configures what the code reads.

CRDs (manifests/crds), the operator's RBAC rules (manifests/rbac), dashboards and alert rules
(monitoring/) reach the chart through links, so they cannot be stale copies; these tests check
that what the chart renders from them is exactly their content, and that every setting the
chart passes to a component is one the component's settings class or CLI knows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from loopline.settings import Settings
from tests import helm_chart
from tests.helm_chart import ci_values_files, documents, expand_rules, render

VALUES = ci_values_files()
VALUE_IDS = [path.name for path in VALUES]
DEFAULT_VALUES = helm_chart.CI_VALUES_DIR / "default-values.yaml"


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    (deployment,) = [
        d
        for d in _by_kind(docs, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    ]
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def test_chart_crds_are_the_manifests() -> None:
    # `helm show crds` joins the files without `---`; the install path is per file, as here.
    shown = [
        d for d in documents(render("--include-crds")) if d["kind"] == "CustomResourceDefinition"
    ]
    manifests = helm_chart.manifest_documents(helm_chart.CRD_DIR)
    assert manifests, "manifests/crds holds no CRD"

    def key(doc: dict[str, Any]) -> str:
        return str(doc["metadata"]["name"])

    assert sorted(shown, key=key) == sorted(manifests, key=key)


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_operator_rbac_is_exactly_the_manifest_rules(values_file: Path) -> None:
    """Namespaced or cluster-wide, the operator gets the rules of manifests/rbac: the chart
    only splits them by scope, never adds or drops a permission."""
    docs = documents(render(values_file=values_file))
    operator_roles = [
        d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert operator_roles
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and "-config" in d["metadata"]["name"]
    )
    backends = tuple(
        name
        for name, key in (("seldon", "SERVING"), ("kfp", "PIPELINE"))
        if config["data"][f"LOOPLINE_OPERATOR_{key}_BACKEND"] == name
    )
    want = expand_rules(helm_chart.operator_manifest_rules(backends))
    assert want, "manifests/rbac binds no role with rules to a ServiceAccount"
    by_namespace: dict[str | None, set[tuple[str, str, str, str]]] = {}
    for role in operator_roles:
        granted = by_namespace.setdefault(role["metadata"].get("namespace"), set())
        granted |= expand_rules(role["rules"])
    cluster = by_namespace.pop(None, set())
    for namespace, granted in by_namespace.items():
        assert granted | cluster == want, f"operator permissions in {namespace}"
    if by_namespace:
        # Namespaced mode: the ClusterRole holds only what has no namespace.
        outside = {r for _, r, _, _ in cluster if r.split("/")[0] not in _CLUSTER_SCOPED}
        assert not {r for r in outside if not r.startswith("/")}, outside
    else:
        assert cluster == want


def test_backend_rbac_is_granted_only_with_its_backend() -> None:
    """manifests/rbac/<name>-seldon.yaml is the seldon backend's: off with Seldon off."""
    docs = documents(render("--set", "backends.seldon.enabled=false"))
    granted = {
        permission
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        for permission in expand_rules(d["rules"])
    }
    assert granted == expand_rules(helm_chart.operator_manifest_rules(backends=("kfp",)))
    assert not {p for p in granted if p[0] == "mlops.seldon.io"}


_CLUSTER_SCOPED = {
    "customresourcedefinitions",
    "namespaces",
    "clusterkopfpeerings",
    "nodes",
    "persistentvolumes",
    "storageclasses",
    "clusterroles",
    "clusterrolebindings",
    "priorityclasses",
    "tokenreviews",
    "subjectaccessreviews",
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "apiservices",
    "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations",
}


def test_bindings_name_the_rendered_service_accounts() -> None:
    for values_file in VALUES:
        docs = documents(render(values_file=values_file))
        accounts = {d["metadata"]["name"] for d in _by_kind(docs, "ServiceAccount")}
        roles = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"].endswith("Role")}
        for binding in docs:
            if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
            for subject in binding["subjects"]:
                assert subject["name"] in accounts
                assert subject["namespace"] == helm_chart.NAMESPACE


def test_dashboards_and_rules_are_monitorings_files() -> None:
    wide = helm_chart.CI_VALUES_DIR / "cluster-wide-values.yaml"
    dashboards = sorted(helm_chart.DASHBOARD_DIR.glob("*.json"))
    rules = sorted(helm_chart.RULES_DIR.glob("*.yaml"))
    if not dashboards or not rules:
        pytest.fail("monitoring/dashboards/*.json and monitoring/rules/*.yaml must exist")
    docs = documents(render(values_file=wide))
    shipped = {
        key: value
        for d in _by_kind(docs, "ConfigMap")
        if d["metadata"]["labels"].get("grafana_dashboard") == "1"
        for key, value in d["data"].items()
    }
    assert {p.name: json.loads(p.read_text()) for p in dashboards} == {
        key: json.loads(value) for key, value in shipped.items()
    }
    (rule,) = _by_kind(docs, "PrometheusRule")
    groups = [g for p in rules for g in yaml.safe_load(p.read_text())["groups"]]
    assert rule["spec"]["groups"] == groups


def _env(container: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's plain environment: envFrom ConfigMaps, then env values."""
    env: dict[str, str] = {}
    configmaps = {d["metadata"]["name"]: d for d in _by_kind(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]]["data"])
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_operator_environment_is_valid_operator_settings(
    values_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unknown LOOPLINE_* variables are silently ignored by pydantic-settings, so a misspelt
    one in the chart would do nothing: every variable must be a field, and they must parse."""
    from loopline.operators.settings import OperatorSettings

    docs = documents(render(values_file=values_file))
    env = _env(_container(docs, "operator"), docs)
    operator_vars = {k for k in env if k.startswith("LOOPLINE_OPERATOR_")}
    known = {f"LOOPLINE_OPERATOR_{name.upper()}" for name in OperatorSettings.model_fields}
    assert operator_vars, "the operator gets no LOOPLINE_OPERATOR_* settings"
    assert operator_vars <= known, operator_vars - known
    core_vars = {k for k in env if k.startswith("LOOPLINE_") and k not in operator_vars}
    assert core_vars <= {f"LOOPLINE_{name.upper()}" for name in Settings.model_fields}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = OperatorSettings()
    from loopline.operators.backends import (
        MONITORING_BACKENDS,
        PIPELINE_BACKENDS,
        SERVING_BACKENDS,
    )

    assert settings.pipeline_backend in PIPELINE_BACKENDS
    assert settings.serving_backend in SERVING_BACKENDS
    assert settings.monitoring_backend in ("", *MONITORING_BACKENDS)
    if "LOOPLINE_OPERATOR_NAMESPACES" in env:
        wide = yaml.safe_load(values_file.read_text()).get("rbac", {}).get("clusterWide", False)
        assert (settings.namespaces == []) is bool(wide)


def _parse_command(container: dict[str, Any]) -> click.Context:
    """Parse the container's `loopline <group> <command> args...` with the real CLI."""
    from loopline.cli.main import cli

    assert container["command"][0] == "loopline"
    argv = container["command"][1:] + container.get("args", [])
    context = cli.make_context("loopline", [], resilient_parsing=True)
    group = cli.get_command(context, argv[0])
    assert isinstance(group, click.Group), f"`loopline {argv[0]}` is not a command group"
    command = group.get_command(context, argv[1])
    assert command is not None, f"`loopline {argv[0]} {argv[1]}` does not exist"
    return command.make_context(argv[1], list(argv[2:]))


def test_operator_command_matches_its_cli() -> None:
    docs = documents(render(values_file=DEFAULT_VALUES))
    container = _container(docs, "operator")
    parsed = _parse_command(container)
    port = container["ports"][0]["containerPort"]
    assert f"http://0.0.0.0:{port}/healthz" in parsed.params.values()


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_operator_backends_chosen_by_the_chart_exist(values_file: Path) -> None:
    """The backend short names the chart renders resolve in the operator's backend maps
    (the local ones always; kfp and seldon once the operator registers them)."""
    from loopline.operators.backends import PIPELINE_BACKENDS, SERVING_BACKENDS

    docs = documents(render(values_file=values_file))
    env = _env(_container(docs, "operator"), docs)
    chosen = {
        "pipeline": (env["LOOPLINE_OPERATOR_PIPELINE_BACKEND"], PIPELINE_BACKENDS),
        "serving": (env["LOOPLINE_OPERATOR_SERVING_BACKEND"], SERVING_BACKENDS),
    }
    missing = [
        f"{kind} backend {name!r}" for kind, (name, table) in chosen.items() if name not in table
    ]
    local = documents(
        render("--set", "backends.kfp.enabled=false", "--set", "backends.seldon.enabled=false")
    )
    local_env = _env(_container(local, "operator"), local)
    assert local_env["LOOPLINE_OPERATOR_PIPELINE_BACKEND"] in PIPELINE_BACKENDS
    assert local_env["LOOPLINE_OPERATOR_SERVING_BACKEND"] in SERVING_BACKENDS
    if missing:
        # The chart targets a real cluster (KFP, Seldon); until the operator registers those
        # backends this is a known gap, reported rather than hidden.
        pytest.xfail(f"the operator does not register the {' and '.join(missing)} yet")


# What the operator's `seldon` serving backend (loopline.operators.backends.seldon) does to
# Seldon Core 2 objects: create, else merge-patch; list by label; delete stale ones.
SELDON_NEEDS = {
    ("mlops.seldon.io", plural, verb)
    for plural in ("servers", "models", "experiments")
    for verb in ("create", "patch", "list", "delete")
}


@pytest.mark.parametrize("values_file", VALUES, ids=VALUE_IDS)
def test_operator_rbac_covers_the_seldon_backend_when_selected(values_file: Path) -> None:
    docs = documents(
        render(
            "--set",
            "backends.seldon.enabled=true",
            "--set",
            "backends.serving=",
            values_file=values_file,
        )
    )
    env = _env(_container(docs, "operator"), docs)
    assert env["LOOPLINE_OPERATOR_SERVING_BACKEND"] == "seldon"
    granted = {
        (group, resource, verb)
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
        for group, resource, verb, name in expand_rules(d["rules"])
        if not name
    }
    if missing := sorted(SELDON_NEEDS - granted):
        # The rules come from manifests/rbac (the operator's); reported, not hidden.
        pytest.xfail(f"manifests/rbac does not grant the seldon backend {missing}")
