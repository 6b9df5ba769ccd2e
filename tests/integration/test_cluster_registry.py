"""The local image registry (Debian's docker-registry) as the cluster starts it: it serves
the distribution API on loopback, stores what is pushed in the storage directory it is
given, and keeps it across a restart."""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.request
from pathlib import Path

import pytest

from loopline.cluster import registry
from loopline.cluster.errors import ClusterError
from loopline.cluster.layout import Layout


def _request(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=10)


def _push_blob(url: str, repository: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with _request("POST", f"http://{url}/v2/{repository}/blobs/uploads/") as started:
        location = started.headers["Location"]
    if location.startswith("/"):
        location = f"http://{url}{location}"
    sep = "&" if "?" in location else "?"
    headers = {"Content-Type": "application/octet-stream"}
    with _request("PUT", f"{location}{sep}digest={digest}", data, headers) as done:
        assert done.status == 201
    return digest


def test_registry_serves_pushes_and_keeps_blobs_across_restarts(tmp_path: Path) -> None:
    try:
        registry.find_binary()
    except ClusterError as exc:  # the message names the Debian package
        pytest.skip(str(exc))
    layout = Layout(tmp_path / "state")
    storage = tmp_path / "storage"
    running = registry.start(layout, storage)
    try:
        assert registry.healthy(running.url)
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        digest = _push_blob(running.url, "loopline-tests/blob", config)
        with _request("GET", f"http://{running.url}/v2/loopline-tests/blob/blobs/{digest}") as got:
            assert got.read() == config
        assert any(storage.rglob("data")), "blobs land in the storage directory"
    finally:
        registry.stop(running.record)
    assert not registry.healthy(running.url)

    again = registry.start(layout, storage, port=running.config.port)
    try:
        with _request("GET", f"http://{again.url}/v2/loopline-tests/blob/blobs/{digest}") as got:
            assert got.read() == config
    finally:
        registry.stop(again.record)


def test_config_listens_on_loopback_with_storage_outside_the_state_dir(tmp_path: Path) -> None:
    config = registry.config(registry.RegistryConfig(port=5000, storage_dir=tmp_path))
    assert config["http"]["addr"] == "127.0.0.1:5000"  # type: ignore[index]
    assert config["storage"]["filesystem"]["rootdirectory"] == str(tmp_path)  # type: ignore[index]
    assert registry.default_storage_dir(Path("/cache")) == Path("/cache/registry")
