"""Health that means serving: how a model that stopped answering ready is observed and
reported (pure parts: the Model builder, the local backend's wording, Seldon's conditions)."""

from __future__ import annotations

from pathlib import Path

from loopline.operators.backends.seldon import model_readiness
from loopline.operators.backends.serving import serving_message
from loopline.operators.builders.model import ModelPlan, reconcile_model
from loopline.operators.builders.serving import MODEL_FAILED, MODEL_NOT_READY, ServingObserved
from loopline.serving.local import Endpoints, ServerStatus
from loopline.types.status import ModelStatus
from tests.unit.test_operator_builders import CTX, _obs, _to_serving

REST = "http://127.0.0.1:40001"
UNREADY = f"model drill-ae on {REST} is not ready (HTTP 503); reloading"


def _cond(plan: ModelPlan, type_: str) -> tuple[str, str, str]:
    c = next(c for c in plan.status.conditions if c.type == type_)
    return c.status.value, c.reason, c.message


def test_a_model_that_stops_being_ready_is_degraded_with_the_reason_then_serves_again() -> None:
    serving = _to_serving(ModelStatus())
    assert serving.status.phase == "Serving"
    down = ServingObserved(
        ready=False,
        champion_version="1",
        endpoints={"rest": REST},
        message=UNREADY,
        reason=MODEL_NOT_READY,
    )
    plan = reconcile_model(_obs(serving.status, serving=down), CTX)
    assert plan.status.phase == "Degraded"
    assert plan.status.message == f"version 1 is not serving: {UNREADY}"
    assert _cond(plan, "Ready") == ("False", MODEL_NOT_READY, plan.status.message)
    assert _cond(plan, "Serving") == ("False", MODEL_NOT_READY, UNREADY)
    assert _cond(plan, "Degraded") == ("True", MODEL_NOT_READY, plan.status.message)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Degraded")]
    assert plan.serving is not None  # still asked for: apply is what repairs it
    assert plan.serving.champion_version == "1"
    up = ServingObserved(ready=True, champion_version="1", endpoints={"rest": REST})
    again = reconcile_model(_obs(plan.status, serving=up), CTX)
    assert again.status.phase == "Serving"
    assert _cond(again, "Ready")[0] == "True"
    assert _cond(again, "Degraded")[:2] == ("False", "AsExpected")


def test_a_server_still_starting_is_a_rollout_not_a_degradation() -> None:
    serving = _to_serving(ModelStatus())
    starting = ServingObserved(ready=False, champion_version="1", message="model server starting")
    plan = reconcile_model(_obs(serving.status, serving=starting), CTX)
    assert plan.status.phase == "Rolling out"
    assert _cond(plan, "Degraded")[0] == "False"


def _status(state: str, last_error: str = "") -> ServerStatus:
    return ServerStatus(
        name="drill-ae",
        state=state,
        pid=1,
        restarts=0,
        endpoints=Endpoints(rest=REST, grpc="127.0.0.1:40002", metrics=f"{REST}/metrics"),
        log_path=Path("/srv/drill-ae/server.log"),
        last_error=last_error,
    )


def test_the_local_backend_words_each_state_for_a_user() -> None:
    reason, message = serving_message(
        _status("unready", f"model drill-ae on {REST} is not ready (HTTP 503)")
    )
    assert (reason, message) == (MODEL_NOT_READY, UNREADY)
    assert serving_message(_status("ready")) == ("", f"model server ready on {REST}")
    reason, message = serving_message(_status("restarting", "exited with code -9"))
    assert reason == "ServerRestarting"
    assert message.startswith("model server exited with code -9; restarting (log: /srv/")
    assert serving_message(_status("starting"))[0] == ""


def _seldon(status: str, reason: str = "", message: str = "") -> dict[str, object]:
    ready = {"type": "Ready", "status": status, "reason": reason, "message": message}
    return {"metadata": {"name": "drill-ae-2"}, "status": {"conditions": [ready]}}


def test_seldon_readiness_tells_loading_from_failed() -> None:
    assert model_readiness(_seldon("True"), "drill-ae-2").ready
    missing = model_readiness(None, "drill-ae-2")
    assert (missing.ready, missing.failed, missing.reason) == (False, False, "")
    loading = model_readiness(_seldon("False", "ModelProgressing"), "drill-ae-2")
    assert (loading.ready, loading.failed, loading.reason) == (False, False, "")
    failed = model_readiness(_seldon("False", "ModelFailed", "OOMKilled"), "drill-ae-2")
    assert (failed.ready, failed.failed, failed.reason) == (False, True, MODEL_FAILED)
    assert failed.message == "Seldon Model drill-ae-2 is not Ready (ModelFailed: OOMKilled)"
