"""The runner's final result as a container termination message: at most 4 KB (the kubelet
keeps no more), and still parseable JSON when the result is larger."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from loopline.operators.builders.kube_job_results import parse_result
from loopline.pipelines.run import TERMINATION_MESSAGE_LIMIT, main, termination_message
from loopline.types.common import Task, Trigger
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec

RUN = "drill-ae-0123456789ab"
RESULT = TrainingRunResult(
    run_id=RUN,
    phase=RunPhase.SUCCEEDED,
    step="register-model",
    model_version="7",
    gate_passed=False,
    rejection_reason="f1 0.52 < champion v6 0.61",
    message="f1 0.52 < champion v6 0.61",
    mlflow_run_id="0a1b2c",
    metrics={f"metric_{i}": i / 7 for i in range(40)},
)


def _size(text: str) -> int:
    return len(text.encode())


def test_a_typical_result_fits_whole_and_reads_back_equal() -> None:
    text = termination_message(RESULT)
    assert _size(text) <= TERMINATION_MESSAGE_LIMIT
    assert parse_result(text, RUN) == RESULT
    assert "gatePassed" not in text  # defaults are left out: the reader fills them in


def test_long_messages_are_cut_and_say_so() -> None:
    # Multi-byte characters: the limit is in bytes, not characters.
    long = RESULT.model_copy(
        update={"message": "Qualität ✓ " * 800, "rejection_reason": "x" * 5000}
    )
    text = termination_message(long)
    assert _size(text) <= TERMINATION_MESSAGE_LIMIT
    parsed = parse_result(text, RUN)
    assert parsed is not None
    assert parsed.message.startswith("Qualität ✓ ")
    assert parsed.message.endswith("the pod's log has all of it]")
    assert parsed.metrics == RESULT.metrics  # cutting the text was enough
    assert (parsed.phase, parsed.model_version, parsed.step) == (
        RunPhase.SUCCEEDED,
        "7",
        "register-model",
    )


def test_metrics_are_left_out_when_nothing_else_is_enough() -> None:
    huge = RESULT.model_copy(update={"metrics": {f"m_{i:04d}": i / 3 for i in range(400)}})
    text = termination_message(huge)
    assert _size(text) <= TERMINATION_MESSAGE_LIMIT
    parsed = parse_result(text, RUN)
    assert parsed is not None
    assert parsed.metrics == {}
    assert "400 metrics left out to fit: see MLflow run 0a1b2c" in parsed.message
    assert parsed.model_version == "7"


def test_runner_writes_its_final_result_to_the_termination_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real runner, with a pipeline name it does not know: it fails before any step.
    It sets the progress variable and signal handlers for its process; both are restored."""
    monkeypatch.delenv("LOOPLINE_PIPELINE_PROGRESS_FILE", raising=False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    spec = TrainingRunSpec(
        run_id=RUN,
        namespace="plant",
        model_name="drill-ae",
        task=Task.ANOMALY_DETECTION,
        trigger=Trigger.MANUAL,
        feature_service="all_sensors",
        registered_model_name="plant.drill-ae",
        mlflow_tracking_uri="http://mlflow.invalid",
        feature_repo=str(tmp_path / "repo"),
        pipeline="no-such-pipeline",
    )
    (tmp_path / "spec.json").write_text(spec.model_dump_json(by_alias=True))
    termination = tmp_path / "termination-log"
    termination.write_text("")  # the kubelet creates it empty
    try:
        code = main(
            [
                "--spec",
                str(tmp_path / "spec.json"),
                "--result",
                str(tmp_path / "run" / "result.json"),
                "--termination-message",
                str(termination),
                "--no-process-group",
            ]
        )
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert code == 1
    parsed = parse_result(termination.read_text(), RUN)
    assert parsed is not None
    assert parsed.phase == RunPhase.FAILED
    assert "no-such-pipeline" in parsed.message
    on_disk = json.loads((tmp_path / "run" / "result.json").read_text())
    assert on_disk["phase"] == "Failed"
