"""Health that means serving: a model unloaded through the model repository API, while its
server process lives on, is reported (Ready=False with the reason) and reloaded by the
operator within one reconcile interval.

Before, the local supervisor only checked that the process was alive: the model answered 503
for minutes while the Model showed `Serving`, Ready=True. Everything here is real: the
operator under kopf against the local control plane, a model server process on loopback
serving small real bundles from MLflow on SQLite. Training is not what is tested, so the
run is a tiny worker that reports the version registered beforehand.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import watch

from loopline.auth import bearer_headers, model_token_path, read_token_file
from loopline.types.common import GROUP, VERSION
from loopline.wait import wait_for
from tests.fixtures.operator import PIPELINE, RECONCILE_INTERVAL, OperatorHarness, model_manifest
from tests.fixtures.serving import RegisteredModel, register_bundles

pytestmark = pytest.mark.security

# One reconcile interval after the supervisor (0.5 s poll) noticed, plus what a busy two-core
# machine needs for a reconcile and a reload of the small bundle.
RECOVER_WITHIN = float(RECONCILE_INTERVAL) + 0.5 + 10.0

# Reports the version the test registered (a worker speaks the local pipeline backend's
# protocol: read --spec, write --result).
WORKER = r"""
import argparse, json, os
from datetime import datetime, timezone
p = argparse.ArgumentParser(); p.add_argument("--spec"); p.add_argument("--result")
a = p.parse_args()
spec = json.load(open(a.spec))
now = datetime.now(timezone.utc).isoformat()
doc = {"runId": spec["runId"], "phase": "Succeeded", "step": "register-model",
       "modelVersion": "1", "gatePassed": True, "metrics": {"f1": 0.9},
       "startedAt": now, "finishedAt": now}
with open(a.result + ".tmp", "w") as f:
    json.dump(doc, f)
os.replace(a.result + ".tmp", a.result)
"""


def _credentials(serving_dir: Path, namespace: str, name: str) -> dict[str, str]:
    """What the operator sends on the repository API: the Model's bearer token, from the token
    file the operator provisioned for the Model (shared by its server and its monitor)."""
    token_file = model_token_path(serving_dir / ".tokens", namespace, name)
    return bearer_headers(read_token_file(token_file))


def _ready_condition(obj: dict[str, Any]) -> tuple[str, str, str]:
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c["type"] == "Ready"), {})
    return ready.get("status", ""), ready.get("reason", ""), ready.get("message", "")


@contextmanager
def _ready_history(h: OperatorHarness, name: str) -> Iterator[list[tuple[float, str, str, str]]]:
    """Every Ready condition the Model goes through while the block runs, with when it was
    seen: a watch, so a Ready=False that lasts less than a poll is not missed."""
    obj = h.get(name)
    assert obj is not None
    seen: list[tuple[float, str, str, str]] = []
    stream = watch.Watch()
    custom = h.custom

    def follow() -> None:
        for event in stream.stream(
            custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            h.namespace,
            "models",
            field_selector=f"metadata.name={name}",
            resource_version=obj["metadata"]["resourceVersion"],
            timeout_seconds=int(RECOVER_WITHIN * 3),
        ):
            seen.append((time.monotonic(), *_ready_condition(event["object"])))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        # The watch notices stop() at its next event: make one, so the thread ends and
        # closes its connection now instead of at the watch's timeout.
        stream.stop()
        h.patch("models", name, {"metadata": {"labels": {"loopline.test/watch": "done"}}})
        thread.join(timeout=30)


def test_an_unloaded_model_is_reported_not_ready_and_reloaded_within_one_reconcile(
    operator_harness: OperatorHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = operator_harness
    registered = register_bundles(tmp_path / "mlflow", name=f"{h.namespace}.drill-ae")
    worker = tmp_path / "bin" / "report_version.py"
    worker.parent.mkdir(parents=True, exist_ok=True)
    worker.write_text(WORKER)
    overrides = {
        "LOOPLINE_MLFLOW_TRACKING_URI": registered.tracking_uri,
        "LOOPLINE_OPERATOR_WORKER_COMMAND": json.dumps([sys.executable, str(worker)]),
    }
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)
    h.env.update(overrides)
    h.create(PIPELINE)
    h.create(model_manifest(serving={"replicas": 1}, monitoring={"enabled": False}))
    with h.running():
        status = h.wait_phase("drill-ae", "Serving", timeout=180)
        rest = status["endpoints"]["rest"]
        ready_url = f"{rest}/v2/models/drill-ae/ready"
        assert httpx.get(ready_url, timeout=5, trust_env=False).status_code == 200
        pid_file = tmp_path / "serving" / h.namespace / "drill-ae" / "server.pid"
        pid = pid_file.read_text().strip()
        with _ready_history(h, "drill-ae") as seen:
            unload = f"{rest}/v2/repository/models/drill-ae/unload"
            answer = httpx.post(
                unload,
                headers=_credentials(tmp_path / "serving", h.namespace, "drill-ae"),
                timeout=10,
                trust_env=False,
            )
            assert answer.status_code == 200, answer.text
            unloaded_at = time.monotonic()
            assert httpx.get(ready_url, timeout=5, trust_env=False).status_code == 503
            down = wait_for(
                lambda: next((s for s in seen if s[1] == "False"), None),
                timeout=RECOVER_WITHIN,
                what=f"Ready=False after the unload (seen: {seen[-3:]})",
            )
            _, _, reason, message = down
            assert reason == "ModelNotReady"
            assert f"model drill-ae on {rest} is not ready (HTTP 503); reloading" in message
            up = wait_for(
                lambda: next((s for s in seen if s[0] > down[0] and s[1] == "True"), None),
                timeout=RECOVER_WITHIN,
                what=f"Ready=True again (seen: {seen[-3:]})",
            )
        assert up[0] - unloaded_at <= RECOVER_WITHIN
        assert httpx.get(ready_url, timeout=5, trust_env=False).status_code == 200
        assert pid_file.read_text().strip() == pid, "reloaded in place, not restarted"
        status = h.wait_phase("drill-ae", "Serving", timeout=RECOVER_WITHIN)
        assert status["endpoints"]["rest"] == rest
        degraded = [m for r, m in h.events("drill-ae") if r == "Degraded"]
        assert degraded, h.events("drill-ae")
        assert "not ready (HTTP 503); reloading" in degraded[0]
    # (printed here: kopf's runner captures stdout while it runs)
    print(
        f"unload -> Ready=False {down[0] - unloaded_at:.2f} s, -> Ready=True "
        f"{up[0] - unloaded_at:.2f} s (reconcile interval {RECONCILE_INTERVAL} s)"
    )


def test_a_model_that_will_not_reload_gets_its_process_restarted(
    tmp_path: Path, registered_model: RegisteredModel
) -> None:
    """The fallback of `recover`: a server that no longer answers at all (stopped with
    SIGSTOP: alive, but hung) fails the reload, so the process is restarted on the same
    ports; the supervisor first reports it not ready with the reason."""
    from loopline.serving.local import LocalModelSpec, LocalServingManager

    spec = LocalModelSpec(
        name="drill-hung",
        model_uri=registered_model.champion_uri,
        tracking_uri=registered_model.tracking_uri,
    )
    # A short ready timeout is also the reload's: a hung server fails it quickly.
    with LocalServingManager(tmp_path / "serving", ready_timeout_s=5) as manager:
        manager.start(spec, wait=False)
        started = manager.wait_ready("drill-hung", timeout_s=120)
        assert started.state == "ready"
        assert started.pid is not None
        os.kill(started.pid, signal.SIGSTOP)
        try:
            unready = wait_for(
                lambda: (s := manager.status("drill-hung")).state == "unready" and s,
                timeout=30,
                what=f"the supervisor to notice (now: {manager.status('drill-hung')})",
            )
            assert "model drill-hung on http://127.0.0.1:" in unready.last_error
            assert "does not answer (ReadTimeout" in unready.last_error
            done = manager.recover("drill-hung")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(started.pid, signal.SIGCONT)
        assert done.startswith("reload failed (drill-hung: reload request failed")
        assert done.endswith("restarted the model server")
        after = manager.wait_ready("drill-hung", timeout_s=120)
        assert after.pid != started.pid
        assert after.endpoints == started.endpoints  # same ports: clients keep their endpoint
        assert after.restarts == 1
        ready = httpx.get(f"{after.endpoints.rest}/v2/models/drill-hung/ready", timeout=5)
        assert ready.status_code == 200
