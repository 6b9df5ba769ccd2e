"""Warm steps: kfp.local's tasks run in this process, with the same artifacts and failures as
kfp.local's own one process per task. Real kfp.local both ways; nothing is mocked.

No `from __future__ import annotations`: KFP reads the components' annotations as types."""

import json
import os
from pathlib import Path
from typing import Any

import pytest
from kfp import dsl, local
from kfp.dsl import Dataset, Markdown, Output

from loopline.pipelines.warm import executor_call, subprocess_steps, warm_steps


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def produce(value: str, table: Output[Dataset], report: Output[Markdown]) -> str:
    import json
    import os

    os.makedirs(table.path, exist_ok=True)
    with open(os.path.join(table.path, "rows.csv"), "w") as fh:
        fh.write(f"value\n{value}\n")
    with open(report.path, "w") as fh:
        fh.write(f"# {value}\n")
    table.metadata.update({"rows": 1, "value": value})
    print("produced", value)
    return json.dumps({"pid": os.getpid(), "value": value})


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def fail_loudly(value: str) -> str:
    raise ValueError(f"bad value {value!r}: the step says why")


@dsl.pipeline(name="warm-shape")
def shaped(value: str) -> str:
    task = produce(value=value)
    task.set_caching_options(enable_caching=False)
    return task.outputs["Output"]


@dsl.pipeline(name="warm-failing")
def failing(value: str) -> str:
    task = fail_loudly(value=value)
    task.set_caching_options(enable_caching=False)
    return task.output


def _run(root: Path, *, warm: bool) -> tuple[dict[str, Any], Path]:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    with warm_steps() if warm else subprocess_steps():
        out = shaped(value="x-1")
    return json.loads(out.output), root


def _tree(root: Path) -> dict[str, str]:
    """Every file under the run's root, by its path below the run's own folder, with the run's
    folder name (it carries a timestamp) taken out of the contents."""
    (run_dir,) = list(root.iterdir())
    files = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            text = path.read_text().replace(str(run_dir), "<run>")
            files[str(path.relative_to(run_dir))] = text
    return files


def test_warm_tasks_run_in_this_process_and_write_what_a_subprocess_writes(
    tmp_path: Path,
) -> None:
    warm, warm_root = _run(tmp_path / "warm", warm=True)
    sub, sub_root = _run(tmp_path / "sub", warm=False)
    assert warm["pid"] == os.getpid()
    assert sub["pid"] != os.getpid()
    assert warm["value"] == sub["value"] == "x-1"
    warm_files, sub_files = _tree(warm_root), _tree(sub_root)
    assert set(warm_files) == set(sub_files)
    assert "produce/table/rows.csv" in warm_files
    output = "produce/executor_output.json"
    for name in warm_files:
        if name in (output, "produce/Output"):
            continue  # the returned pid differs by design
        assert warm_files[name] == sub_files[name], name
    warm_out = json.loads(warm_files[output])
    sub_out = json.loads(sub_files[output])
    assert warm_out["artifacts"] == sub_out["artifacts"]
    assert warm_out["artifacts"]["table"]["artifacts"][0]["metadata"]["rows"] == 1


def test_a_failing_warm_step_fails_the_run_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(tmp_path),
        raise_on_error=True,
    )
    with warm_steps(), pytest.raises(RuntimeError, match=r"FAILURE.*fail-loudly"):
        failing(value="v")
    assert "ValueError: bad value 'v': the step says why" in capsys.readouterr().out
    # The process is as it was: the next run still works, warm.
    after, _ = _run(tmp_path / "after", warm=True)
    assert after == {"pid": os.getpid(), "value": "x-1"}


def test_the_handler_is_kfps_own_again_after_the_block(tmp_path: Path) -> None:
    from kfp.local import subprocess_task_handler

    before = subprocess_task_handler.SubprocessTaskHandler
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    with pytest.raises(RuntimeError, match="FAILURE"), warm_steps():
        failing(value="v")
    assert subprocess_task_handler.SubprocessTaskHandler is before


def test_only_the_plain_executor_command_runs_warm() -> None:
    script = (
        "program_path=$(mktemp -d)\n\n\n"
        'printf "%s" "$0" > "$program_path/ephemeral_component.py"\n\n'
        "_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main --component_module_path "
        '"$program_path/ephemeral_component.py" "$@"\n'
    )
    args = ["--executor_input", "{}", "--function_to_execute", "f"]
    call = executor_call(["sh", "-ec", script, "def f(): pass", *args], {"A": "1"})
    assert call is not None
    assert (call.function, call.executor_input, call.source, call.env) == (
        "f",
        "{}",
        "def f(): pass",
        {"A": "1"},
    )
    pip = "python3 -m pip install kfp\n" + script
    assert executor_call(["sh", "-ec", pip, "def f(): pass", *args], {}) is None
    assert executor_call(["sh", "-ec", script, "def f(): pass"], {}) is None
    assert executor_call(["python", "-c", "pass", "x"], {}) is None


def test_a_failing_step_fails_the_warm_run_with_the_steps_message(
    tmp_path: Path, training_mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loopline.components.progress import read_events
    from loopline.pipelines.run import Runner
    from loopline.types.common import Task, Trigger
    from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec

    monkeypatch.delenv("LOOPLINE_PIPELINE_PROGRESS_FILE", raising=False)  # the runner sets it
    spec = TrainingRunSpec(
        run_id="warm-fails",
        namespace="plant",
        model_name="drill-ae",
        task=Task.ANOMALY_DETECTION,
        trigger=Trigger.MANUAL,
        feature_service="all_sensors",
        registered_model_name="plant.drill-ae",
        mlflow_tracking_uri=training_mlflow_uri,
        feature_repo=str(tmp_path / "no-such-repo"),
    )
    result = Runner(spec, tmp_path / "result.json", tmp_path / "work").run()
    assert result.phase == RunPhase.FAILED
    assert result.step == "load-features"
    assert result.message.startswith("load-features: ")
    assert "no-such-repo" in result.message
    written = TrainingRunResult.model_validate_json((tmp_path / "result.json").read_text())
    assert written.message == result.message
    events = read_events(tmp_path / "work" / "events.jsonl")
    assert [e["event"] for e in events] == ["started", "failed"]
