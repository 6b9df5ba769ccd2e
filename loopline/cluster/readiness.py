"""When a started control-plane process counts as ready: the probe for each component, and the
`default` ServiceAccount that makes a cluster usable for pods."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable

from loopline.cluster import dns, probes, recovery, registry
from loopline.cluster import process as proc
from loopline.cluster import state as st
from loopline.cluster.errors import ComponentStartError
from loopline.cluster.layout import Layout
from loopline.wait import WaitTimeout, wait_for


def api_get(state: st.ClusterState, layout: Layout, token: str, path: str) -> object:
    return probes.api_get_json(state.server, layout.ca_cert, token, path)


def nodes_ready(state: st.ClusterState, layout: Layout, token: str) -> bool:
    data = api_get(state, layout, token, "/api/v1/nodes?labelSelector=type%3Dkwok")
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or len(items) < state.nodes:
        return False
    for node in items:
        conditions = node.get("status", {}).get("conditions") or []
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            return False
    return True


def probe(name: str, state: st.ClusterState, layout: Layout, token: str) -> Callable[[], bool]:
    """The readiness probe of component `name`."""
    ports = state.ports
    if name == "etcd":
        scheme = recovery.etcd_scheme(state)
        context = (
            probes.etcd_context(
                layout.etcd_ca_cert, layout.etcd_client_cert, layout.etcd_client_key
            )
            if scheme == "https"
            else None
        )
        url = f"{scheme}://127.0.0.1:{ports['etcd-client']}"
        return lambda: probes.etcd_healthy(url, context)
    if name == "kube-apiserver":
        return lambda: probes.apiserver_ready(state.server, layout.ca_cert, token)
    if name in ("kube-controller-manager", "kube-scheduler"):
        return lambda: probes.healthz(f"https://127.0.0.1:{ports[name]}/healthz")
    if name == "kwok":

        def kwok_ready() -> bool:
            try:
                return nodes_ready(state, layout, token)
            except (urllib.error.URLError, ValueError, KeyError):
                return False

        return kwok_ready
    if name == dns.PROCESS_NAME:
        return lambda: dns.ready(ports[dns.READY_PORT_KEY])
    if name == registry.PROCESS_NAME:
        return lambda: registry.healthy(f"127.0.0.1:{ports[registry.PORT_KEY]}")
    raise ValueError(name)


def wait_default_service_account(
    state: st.ClusterState, layout: Layout, token: str, *, timeout: float
) -> None:
    """Pods are rejected until the controller-manager created the namespace's `default`
    ServiceAccount; wait for it so the cluster is usable when `up` returns."""
    path = "/api/v1/namespaces/default/serviceaccounts/default"

    def created() -> bool:
        api_get(state, layout, token, path)
        return True

    try:
        wait_for(
            created,
            timeout=timeout,
            interval=0.2,
            what="the default ServiceAccount",
            ignore=(urllib.error.URLError, ValueError),
        )
    except WaitTimeout as exc:
        record = state.process("kube-controller-manager")
        raise ComponentStartError(
            record.name,
            "did not create the default ServiceAccount",
            record.log,
            proc.log_tail(record.log),
        ) from exc
