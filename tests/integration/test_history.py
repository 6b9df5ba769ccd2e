"""The history ledger against the real local API server, and the operator writing it.

The operator runs under kopf's KopfRunner with the test worker of tests/fixtures/operator.py
(it reports made-up versions) and `serving.replicas: 0`, so each new version is promoted at
once; the canary's own decisions and `--at` during a canary are written here through the
ledger as the operator writes them (tests/unit/test_history.py checks the operator's canary
decisions from its plans).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline.cli.history import history
from loopline.history.ledger import LABEL, Ledger, chunk_name
from loopline.types.history import Decision, ServingState
from tests.fixtures.cluster import ClusterHandle, wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

RETRAIN = "loopline.dev/retrain"
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


def _decision(minute: int, kind: str, version: str, **serving: object) -> Decision:
    return Decision(
        at=T0 + timedelta(minutes=minute),
        kind=kind,
        actor="loopline-operator",
        message=f"{kind} {version}",
        version=version,
        serving=ServingState.model_validate(serving),
    )


def test_ledger_seals_full_chunks_and_keeps_a_bounded_number(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_api)
    ledger = Ledger(core, chunk_size=3, chunks=2)
    for minute in range(8):
        ledger.append(namespace, "drill", [_decision(minute, "CanaryStep", str(minute))])
    chunks = core.list_namespaced_config_map(namespace, label_selector=f"{LABEL}=drill").items
    names = sorted(c.metadata.name for c in chunks)
    assert names == [chunk_name("drill", 1), chunk_name("drill", 2)]
    sealed = core.read_namespaced_config_map(chunk_name("drill", 1), namespace)
    assert sealed.immutable is True
    with pytest.raises(ApiException) as refused:  # append-only: the API server refuses edits
        core.patch_namespaced_config_map(chunk_name("drill", 1), namespace, {"data": {"x": "y"}})
    assert refused.value.status == 422
    # A new writer (an operator restarted) goes on in the open chunk.
    Ledger(core, chunk_size=3, chunks=2).append(namespace, "drill", [_decision(9, "Promoted", "9")])
    kept = [d.version for d in ledger.read(namespace, "drill")]
    assert kept == ["3", "4", "5", "6", "7", "9"]


class _Counting:
    """CoreV1Api, with every call's method name recorded: the ledger's cost in API calls."""

    def __init__(self, core: k8s.CoreV1Api) -> None:
        self.core, self.calls = core, []

    def __getattr__(self, name: str) -> object:
        method = getattr(self.core, name)

        def call(*args: object, **kwargs: object) -> object:
            self.calls.append(name)
            return method(*args, **kwargs)

        return call


def test_a_models_first_decisions_open_its_chunk_in_one_call(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    counting = _Counting(k8s.CoreV1Api(kube_api))
    ledger = Ledger(counting, chunk_size=3, chunks=2)  # type: ignore[arg-type]
    ledger.append(namespace, "drill", [_decision(0, "Created", "")])
    # one list per namespace finds every Model's open chunk; then the create carries the entry
    assert counting.calls == ["list_namespaced_config_map", "create_namespaced_config_map"]
    counting.calls.clear()
    ledger.append(namespace, "drill", [_decision(1, "Promoted", "1")])
    ledger.append(namespace, "press", [_decision(1, "Created", "")])
    assert counting.calls == ["patch_namespaced_config_map", "create_namespaced_config_map"]
    assert [d.kind for d in ledger.read(namespace, "drill")] == ["Created", "Promoted"]


def test_two_writers_opening_the_same_chunk_lose_no_decision(
    kube_api: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_api)
    first, second = Ledger(core), Ledger(core)
    ledger_of_another = Ledger(core)
    ledger_of_another.append(namespace, "press", [_decision(0, "Created", "")])
    second.append(namespace, "press", [_decision(1, "Promoted", "1")])  # lists the namespace
    first.append(namespace, "drill", [_decision(2, "Created", "")])
    # `second` listed before drill had a chunk: its create is refused (409), it reads the
    # chunks again and patches the one `first` opened
    second.append(namespace, "drill", [_decision(3, "Promoted", "1")])
    assert [d.kind for d in first.read(namespace, "drill")] == ["Created", "Promoted"]
    chunks = core.list_namespaced_config_map(namespace, label_selector=f"{LABEL}=drill").items
    assert [c.metadata.name for c in chunks] == [chunk_name("drill", 0)]


def test_history_at_before_during_and_after_a_canary(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str
) -> None:
    Ledger(k8s.CoreV1Api(kube_api)).append(
        namespace,
        "drill",
        [
            _decision(0, "Promoted", "1", champion="1"),
            _decision(10, "TrainingSucceeded", "2", champion="1", canary="2", weight=10),
            _decision(12, "CanaryStep", "2", champion="1", canary="2", weight=50),
            _decision(14, "Promoted", "2", champion="2"),
        ],
    )

    def at(minute: int) -> dict[str, object]:
        when = (T0 + timedelta(minutes=minute)).isoformat()
        args = [f"{namespace}/drill", "--at", when, "-o", "json"]
        done = CliRunner().invoke(history, [*args, "--kubeconfig", str(cluster.kubeconfig)])
        assert done.exit_code == 0, done.output
        answer: dict[str, object] = json.loads(done.output)
        return answer

    assert at(-5)["serving"] is None
    assert at(5)["serving"] == {"champion": "1", "canary": None, "weight": 0}
    during = at(13)
    assert during["serving"] == {"champion": "1", "canary": "2", "weight": 50}
    assert during["canaryBy"]["kind"] == "CanaryStep"  # type: ignore[index]
    after = at(30)
    assert after["serving"] == {"champion": "2", "canary": None, "weight": 0}
    assert after["championBy"]["kind"] == "Promoted"  # type: ignore[index]
    text = CliRunner().invoke(
        history, [f"{namespace}/drill", "--version", "2", "--kubeconfig", str(cluster.kubeconfig)]
    )
    assert text.exit_code == 0, text.output
    assert [line.split()[1] for line in text.output.splitlines()] == [
        "TrainingSucceeded",
        "CanaryStep",
        "Promoted",
    ]


def _kinds(h: OperatorHarness) -> list[str]:
    return [d.kind for d in Ledger(k8s.CoreV1Api(h.api)).read(h.namespace, "drill-ae")]


def test_operator_history_survives_a_restart_and_the_deletion_of_all_events(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    h.create(PIPELINE)
    h.create(model_manifest())
    with h.running():
        h.wait_phase("drill-ae", "Serving", timeout=60)
    ledger = Ledger(k8s.CoreV1Api(h.api))
    first = ledger.read(h.namespace, "drill-ae")
    kinds = [d.kind for d in first]
    assert kinds[0] == "Created"
    assert {"TrainingStarted", "TrainingSucceeded", "Promoted"} <= set(kinds)
    started = next(d for d in first if d.kind == "TrainingStarted")
    assert started.evidence["trigger"] == "spec-change"
    promoted = next(d for d in first if d.kind == "Promoted")
    assert promoted.version == "1"
    assert promoted.serving == ServingState(champion="1")
    succeeded = next(d for d in first if d.kind == "TrainingSucceeded")
    assert succeeded.evidence["modelVersion"] == "1"
    assert succeeded.evidence["gatePassed"] is True

    k8s.CoreV1Api(h.api).delete_collection_namespaced_event(h.namespace)
    assert h.events("drill-ae") == []
    with h.running():  # a new operator
        h.patch("models", "drill-ae", {"metadata": {"annotations": {RETRAIN: "req-7"}}})
        wait_for(
            lambda: (h.status("drill-ae").get("champion") or {}).get("version") == "2",
            timeout=60,
            what="version 2 to be champion",
        )
        wait_for(lambda: _kinds(h).count("Promoted") == 2, timeout=30, what="its promotion")
    after = ledger.read(h.namespace, "drill-ae")
    assert after[: len(first)] == first  # nothing lost, nothing rewritten
    requested = next(d for d in after if d.kind == "RetrainRequested")
    assert requested.actor == "manual"
    assert requested.evidence["requestId"] == "req-7"
    between = promoted.at + (after[-1].at - promoted.at) / 2
    runner = CliRunner()
    base = [f"{h.namespace}/drill-ae", "--kubeconfig", str(h.cluster.kubeconfig)]
    then = runner.invoke(history, [*base, "--at", between.isoformat()])
    assert then.exit_code == 0, then.output
    assert then.output.startswith(f"at {between:%Y-%m-%dT%H:%M:%SZ}: champion 1")
    now = runner.invoke(history, [*base, "--at", datetime.now(UTC).isoformat()])
    assert "champion 2" in now.output

    h.custom.delete_namespaced_custom_object(
        "loopline.dev", "v1alpha1", h.namespace, "models", "drill-ae"
    )
    with h.running():
        wait_for(lambda: h.get("drill-ae") is None, timeout=30, what="the Model to go")
    final = ledger.read(h.namespace, "drill-ae")
    assert final[-1].kind == "Deleted"
    assert final[-1].serving == ServingState()


def test_the_demo_reads_the_ledger_into_its_report(
    cluster: ClusterHandle, kube_api: k8s.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The demo's end (`Demo.shutdown`, as `loopline demo` runs it) reads the Model's ledger
    from the API server into the record and the report's history section."""
    from loopline.demo.record import DemoRecord
    from loopline.demo.scenario import Demo, DemoResult
    from loopline.demo.settings import DemoSettings
    from loopline.kube import api_client

    written = [
        _decision(0, "Promoted", "1", champion="1"),
        _decision(10, "TrainingSucceeded", "2", champion="1", canary="2", weight=10),
        _decision(14, "Promoted", "2", champion="2"),
    ]
    Ledger(k8s.CoreV1Api(kube_api)).append(namespace, "drill", written)
    settings = DemoSettings(
        state_dir=tmp_path / "state",
        report_dir=tmp_path / "report",
        namespace=namespace,
        model="drill",
    )
    demo = Demo(settings, keep=True)  # nothing was started, so nothing to stop
    demo.api, demo.kubeconfig = api_client(cluster.kubeconfig), cluster.kubeconfig
    result = DemoResult(record=demo.record, state_dir=demo.state_dir, demo_id="")
    demo.shutdown(result)
    ref = f"{namespace}/drill"
    assert [d.kind for d in demo.record.history[ref]] == [d.kind for d in written]
    assert result.report is not None
    doc = result.report.read_text()
    assert f"<code>{ref}</code>: 3 decisions" in doc
    assert DemoRecord.load(result.report.parent / "record.json").history[ref] == written
