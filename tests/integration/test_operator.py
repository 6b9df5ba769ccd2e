"""The operator against the real local control plane, under kopf's KopfRunner.

Training runs go through the real local pipeline backend with the test worker of
tests/fixtures/operator.py (a small real program speaking the worker protocol that does not
train: it reports a made-up model version). Models use `serving.replicas: 0`, so no model
server is started for those made-up versions; what is tested is the operator: phases,
conditions, Events, run identity across restarts, retraining requests, backend failures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from loopline import supervisor
from loopline.operators.backends.pipelines import PID_FILE
from tests.fixtures.cluster import wait_for
from tests.fixtures.operator import PIPELINE, OperatorHarness, model_manifest

RETRAIN = "loopline.dev/retrain"


def _reasons(h: OperatorHarness, name: str) -> list[str]:
    return [reason for reason, _ in h.events(name)]


def test_model_walks_the_phases_with_conditions_and_events(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_TEST_WORKER_STEP_SECONDS", "1.0")
    h.create(model_manifest())  # before its Pipeline: Pending, naming the missing reference
    with h.running():
        pending = h.wait_phase("drill-ae", "Pending")
        assert "spec.pipelineRef.name" in pending["message"]
        h.create(PIPELINE)
        h.wait_phase("drill-ae", "Training", timeout=30)
        status = h.wait_phase("drill-ae", "Serving", timeout=60)
    obj = h.get("drill-ae")
    assert obj is not None
    generation = obj["metadata"]["generation"]
    assert status["observedGeneration"] == generation
    assert status["champion"]["version"] == "1"
    # The registry agrees: the operator pointed `champion` at the version its run registered.
    tracking = h.env["LOOPLINE_MLFLOW_TRACKING_URI"]
    registered = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    alias = registered.get_model_version_by_alias(f"{h.namespace}.drill-ae", "champion")
    assert str(alias.version) == "1"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert set(conditions) == {"Ready", "Training", "Serving", "Drifted", "Degraded"}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["Training"]["status"] == "False"
    assert conditions["Training"]["reason"] == "Succeeded"
    assert conditions["Degraded"]["status"] == "False"
    for condition in conditions.values():
        assert condition["observedGeneration"] == generation
        assert condition["lastTransitionTime"].endswith("Z")
    reasons = _reasons(h, "drill-ae")
    for expected in (
        "TrainingStarted",
        "Training",
        "Validating",
        "TrainingSucceeded",
        "Promoted",
        "Serving",
    ):
        assert expected in reasons, reasons
    assert reasons.index("Training") < reasons.index("Validating") < reasons.index("Serving")
    # kopf's bookkeeping stays out of status; the finalizer is ours.
    assert set(status) <= {
        "phase",
        "message",
        "observedGeneration",
        "conditions",
        "runs",
        "champion",
        "trainingHash",
        "endpoints",
        "drift",
        "retraining",
        "currentRun",
        "challenger",
        "rollout",
        "pendingRequest",
        "history",
    }
    assert "loopline.dev/cleanup" in obj["metadata"]["finalizers"]
    assert h.started() == [status["runs"][0]["runId"]]
    # The Pipeline lists the Model's runs.
    pipeline = wait_for(
        lambda: (h.get("training", "pipelines") or {}).get("status", {}).get("recentRuns"),
        timeout=10,
        what="Pipeline status.recentRuns",
    )
    assert pipeline[0]["model"] == "drill-ae"


def test_restart_mid_training_spec_change_and_repeated_retrain_requests(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 the operator mid-run: one run per cause; spec change: a new run; the same
    retraining request id twice: one run."""
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_TEST_WORKER_STEP_SECONDS", "1.5")
    h.env["LOOPLINE_TEST_WORKER_STEP_SECONDS"] = "1.5"
    h.create(PIPELINE)
    h.create(model_manifest())
    first = h.start_process()
    wait_for(lambda: h.started(), timeout=60, what="the first run to start")
    h.wait_phase("drill-ae", "Training")
    h.kill(first)
    with h.running():
        status = h.wait_phase("drill-ae", "Serving", timeout=60)
        assert len(h.started()) == 1, h.started()
        assert status["runs"][0]["runId"] == h.started()[0]

        h.patch("models", "drill-ae", {"spec": {"training": {"epochs": 3}}})
        wait_for(lambda: len(h.started()) == 2, timeout=30, what="a run for the new generation")
        status = h.wait_phase("drill-ae", "Serving", timeout=60)
        assert status["runs"][0]["generation"] == 2
        assert status["champion"]["version"] == "2"

        notes = {"metadata": {"annotations": {RETRAIN: "req-42"}}}
        h.patch("models", "drill-ae", notes)
        h.patch("models", "drill-ae", notes)
        wait_for(lambda: len(h.started()) == 3, timeout=30, what="the retraining run")
        status = h.wait_phase("drill-ae", "Serving", timeout=60)
        # Two more reconciles with the annotation still on the object (a serving-only change
        # each, which starts no run), then the count: still one run for req-42.
        for seconds in (31, 32):
            h.patch(
                "models", "drill-ae", {"spec": {"serving": {"canary": {"stepSeconds": seconds}}}}
            )
            generation = (h.get("drill-ae") or {})["metadata"]["generation"]
            wait_for(
                lambda g=generation: h.status("drill-ae").get("observedGeneration") == g,
                timeout=30,
                what=f"the operator to reconcile generation {generation}",
            )
    assert len(h.started()) == 3, h.started()
    assert status["retraining"]["requestId"] == "req-42"
    assert status["retraining"]["trigger"] == "manual"
    assert status["runs"][0]["requestId"] == "req-42"
    assert _reasons(h, "drill-ae").count("RetrainRequested") == 1


def test_backend_down_degrades_then_recovers_without_restart(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    h.runs_dir.parent.mkdir(parents=True, exist_ok=True)
    h.runs_dir.write_text("the run volume is gone")  # the local backend cannot write runs
    h.create(PIPELINE)
    h.create(model_manifest())
    with h.running():
        status = h.wait_phase("drill-ae", "Degraded", timeout=30)
        degraded = h.condition("drill-ae", "Degraded")
        assert degraded["status"] == "True"
        assert degraded["reason"] == "BackendUnavailable"
        assert "cannot write run directory" in degraded["message"]
        assert "cannot write run directory" in status["message"]
        assert "BackendUnavailable" in _reasons(h, "drill-ae")
        h.runs_dir.unlink()  # the volume is back
        h.wait_phase("drill-ae", "Serving", timeout=60)
        assert h.condition("drill-ae", "Degraded")["status"] == "False"
    assert len(h.started()) == 1


def test_failed_run_fails_the_model_with_the_reason(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.create(PIPELINE)
    h.create(model_manifest(training={"epochs": 999}))  # the test worker reports Failed
    with h.running():
        status = h.wait_phase("drill-ae", "Failed", timeout=60)
    assert "loss is NaN" in status["message"]
    assert "TrainingFailed" in _reasons(h, "drill-ae")
    assert len(h.started()) == 1


def test_delete_cancels_runs_and_releases_the_finalizer(
    operator_harness: OperatorHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = operator_harness
    monkeypatch.setenv("LOOPLINE_TEST_WORKER_STEP_SECONDS", "30")
    h.create(PIPELINE)
    h.create(model_manifest())
    with h.running():
        h.wait_phase("drill-ae", "Training", timeout=30)
        run_id = wait_for(h.started, timeout=30, what="the worker to start")[0]
        record = supervisor.load_record(h.runs_dir / run_id / PID_FILE)
        assert record is not None
        pid = record.pid
        h.custom.delete_namespaced_custom_object(
            "loopline.dev", "v1alpha1", h.namespace, "models", "drill-ae"
        )
        wait_for(lambda: h.get("drill-ae") is None, timeout=30, what="the Model to go")
    assert not _alive(pid), "the run's worker survived the Model's deletion"
    assert (h.runs_dir / run_id / "cancelled").exists()


def test_apiserver_restart_while_running(operator_harness: OperatorHarness) -> None:
    h = operator_harness
    h.create(PIPELINE)
    with h.running():
        h.create(model_manifest("before"))
        h.wait_phase("before", "Serving", timeout=60)
        h.cluster.restart_apiserver()
        h.create(model_manifest("after"))
        h.wait_phase("after", "Serving", timeout=90)
        h.patch("models", "before", {"metadata": {"annotations": {RETRAIN: "after-restart"}}})
        wait_for(
            lambda: (
                (h.status("before").get("retraining") or {}).get("requestId") == "after-restart"
            ),
            timeout=60,
            what="the retraining request after the restart",
        )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_cron_schedule_requests_a_run_per_tick(operator_harness: OperatorHarness) -> None:
    """A Pipeline schedule becomes a retraining request (trigger schedule) on its Models."""
    h = operator_harness
    h.create(PIPELINE | {"spec": {"pipeline": "training", "schedule": "* * * * *"}})
    h.create(model_manifest())
    with h.running():
        h.wait_phase("drill-ae", "Serving", timeout=60)
        retraining = wait_for(
            lambda: h.status("drill-ae").get("retraining"),
            timeout=90,
            what="a scheduled retraining request",
        )
        assert retraining["trigger"] == "schedule"
        assert retraining["requestId"].startswith("schedule-")
        wait_for(lambda: len(h.started()) == 2, timeout=30, what="the scheduled run")
        pipeline = (h.get("training", "pipelines") or {}).get("status", {})
    assert pipeline["lastScheduleTime"]
    assert pipeline["nextScheduleTime"] > pipeline["lastScheduleTime"]
    assert any(reason == "ScheduledRun" for reason, _ in h.events("training"))
