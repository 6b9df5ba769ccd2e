"""The operator's /metrics in the chart: the port, its Service, the operator's setting, the
ServiceMonitor that keeps the Models' own namespace label, and a NetworkPolicy that admits
the named Prometheus to that port only (and nobody while none is named)."""

from __future__ import annotations

from typing import Any

from tests.helm_chart import documents, render

PROMETHEUS = ("--set", "networkPolicy.prometheus.namespace=monitoring")


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def test_the_port_its_service_and_the_operators_setting() -> None:
    docs = documents(render())
    deployment = _one(docs, "Deployment", "loopline-operator")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"health": 8080, "metrics": 8081}
    config = _one(docs, "ConfigMap", "loopline-config")
    assert config["data"]["LOOPLINE_OPERATOR_METRICS_PORT"] == "8081"
    service = _one(docs, "Service", "loopline-operator-metrics")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}
    ]


def test_no_port_no_service_no_setting() -> None:
    docs = documents(render("--set", "operator.metricsPort=0", *PROMETHEUS))
    assert not [d for d in docs if d["metadata"]["name"] == "loopline-operator-metrics"]
    assert (
        "LOOPLINE_OPERATOR_METRICS_PORT" not in _one(docs, "ConfigMap", "loopline-config")["data"]
    )
    assert _one(docs, "NetworkPolicy", "loopline-operator")["spec"]["ingress"] == []


def test_only_the_named_prometheus_reaches_the_metrics_port() -> None:
    closed = documents(render())
    assert _one(closed, "NetworkPolicy", "loopline-operator")["spec"]["ingress"] == []
    docs = documents(render(*PROMETHEUS))
    (rule,) = _one(docs, "NetworkPolicy", "loopline-operator")["spec"]["ingress"]
    assert rule == {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "ports": [{"port": 8081, "protocol": "TCP"}],
    }


def test_the_service_monitor_keeps_the_models_namespace_label() -> None:
    docs = documents(render("--set", "metrics.serviceMonitor.enabled=true"))
    monitor = _one(docs, "ServiceMonitor", "loopline-operator")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["honorLabels"] is True
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["loopline-system"]}
    service = _one(docs, "Service", "loopline-operator-metrics")
    labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not [d for d in documents(render()) if d["kind"] == "ServiceMonitor"]  # off by default
