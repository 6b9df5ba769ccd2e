"""The compiled pipeline is a golden file: changing the pipeline without recompiling fails."""

from __future__ import annotations

from pathlib import Path

import yaml

import loopline
from loopline.components.steps import STEPS
from loopline.pipelines.compile import COMPILED_DIR, compile_all, stale


def test_golden_files_match_the_pipeline_code() -> None:
    diffs = stale()
    assert not diffs, (
        "compiled pipelines are stale; run `python -m loopline.pipelines.compile`:\n"
        + "\n".join(diffs.values())
    )


def test_a_changed_golden_file_is_detected(tmp_path: Path) -> None:
    compile_all(tmp_path)
    golden = tmp_path / "training.yaml"
    golden.write_text(golden.read_text().replace("train-model", "train-model-old"))
    assert list(stale(tmp_path)) == ["training.yaml"]


def test_pipeline_has_the_steps_in_order_without_runtime_pip_install() -> None:
    doc = next(yaml.safe_load_all((COMPILED_DIR / "training.yaml").read_text()))
    tasks = doc["root"]["dag"]["tasks"]
    assert set(tasks) == set(STEPS)
    assert tasks["train-model"]["dependentTasks"] == ["load-features", "validate-data"]
    assert "compare-with-champion" in tasks["register-model"]["dependentTasks"]
    for executor in doc["deploymentSpec"]["executors"].values():
        container = executor["container"]
        assert container["image"] == f"loopline/training:{loopline.__version__}"
        assert "pip install" not in " ".join(container["command"])
    for task in tasks.values():
        assert task["cachingOptions"] == {}  # caching off (KFP omits the false flag)
