"""The operator's local monitoring backend with real `loopline monitor serve` processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from loopline import supervisor
from loopline.operators.backends.monitoring import PID_FILE, LocalMonitoringBackend
from loopline.operators.builders.monitoring import MonitorDesired
from tests.fixtures.cluster import wait_for

# Parsed at start-up, never contacted: the monitors here request no retraining.
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""

DESIRED = MonitorDesired(
    namespace="plant",
    name="drill-ae",
    champion_version="1",
    detector="ks",
    p_value=0.05,
    window_size=100,
    cooldown_seconds=60,
    retrain_on_drift=False,
)


def _backend(tmp_path: Path) -> LocalMonitoringBackend:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    return LocalMonitoringBackend(
        tmp_path / "monitors",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        kubeconfig=kubeconfig,
    )


def _wait_live(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"monitor at {url} never answered /healthz")


def test_a_monitor_left_by_a_killed_operator_is_stopped_not_leaked(tmp_path: Path) -> None:
    """An operator killed with SIGKILL cannot stop its monitors (own sessions). The next one
    stops the leftover before starting its own, so two monitors never share a state folder."""
    crashed = _backend(tmp_path)
    _wait_live(crashed.apply(DESIRED))
    old = crashed._monitors[DESIRED.key].record
    folder = tmp_path / "monitors" / "plant" / "drill-ae"
    assert supervisor.load_record(folder / PID_FILE) == old
    # The crash: the backend is gone without close(); its monitor runs on.
    fresh = _backend(tmp_path)
    try:
        url = fresh.apply(DESIRED)
        wait_for(lambda: not supervisor.alive(old), timeout=15, what="the old monitor to stop")
        new = fresh._monitors[DESIRED.key].record
        assert new.pid != old.pid
        _wait_live(url)
        assert supervisor.load_record(folder / PID_FILE) == new
    finally:
        fresh.close()
        if supervisor.alive(old):  # the test failed: leave nothing behind
            crashed.close()
    assert not supervisor.alive(new)
    assert not (folder / PID_FILE).exists()
