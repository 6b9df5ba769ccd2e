"""Readiness probes for the components (stdlib HTTP only: they run before any client)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path


def _get(url: str, *, context: ssl.SSLContext | None, token: str | None, timeout: float) -> str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            body: bytes = response.read()
            return body.decode(errors="replace")
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTP error holds its connection open until closed
        raise


def etcd_context(ca_file: Path, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """TLS to etcd: verified against etcd's CA, presenting the apiserver's client cert."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(str(cert_file), str(key_file))
    return context


def etcd_healthy(client_url: str, context: ssl.SSLContext | None, timeout: float = 2.0) -> bool:
    """etcd answers /health with {"health":"true"} once it has a leader."""
    try:
        body = _get(f"{client_url}/health", context=context, token=None, timeout=timeout)
    except (urllib.error.URLError, OSError):
        return False
    try:
        return bool(json.loads(body).get("health") == "true")
    except ValueError:
        return False


def apiserver_ready(server: str, ca_file: Path, token: str, timeout: float = 5.0) -> bool:
    """kube-apiserver's /readyz: 200 "ok" once every post-start hook (RBAC bootstrap
    roles, priority-and-fairness config, CRD informers...) has finished. TLS is verified
    against our CA, which also proves the serving certificate is right."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        return _get(f"{server}/readyz", context=context, token=token, timeout=timeout) == "ok"
    except (urllib.error.URLError, OSError):
        return False


def healthz(url: str, timeout: float = 2.0) -> bool:
    """A component's /healthz on loopback. The controller-manager and scheduler serve a
    self-signed certificate they generate in memory, so there is nothing to verify against;
    the request never leaves 127.0.0.1."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        return _get(url, context=context, token=None, timeout=timeout) == "ok"
    except (urllib.error.URLError, OSError):
        return False


def api_get_json(server: str, ca_file: Path, token: str, path: str, timeout: float = 5.0) -> object:
    """GET an apiserver path and decode the JSON (raises URLError/HTTPError on failure)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    return json.loads(_get(f"{server}{path}", context=context, token=token, timeout=timeout))
