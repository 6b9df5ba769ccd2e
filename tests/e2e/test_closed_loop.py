"""The project's most important test: the whole closed loop, as `loopline demo --quick` runs it.

It starts its own local control plane (as the demo does), MLflow, the operator with local
backends, model servers and the drift monitor, drives real REST and gRPC traffic, changes the
recipe and kills a sensor, then asserts the story from what was measured. Nothing is mocked.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from loopline.components.steps import SINCE_DRIFT, WINDOW_BASIS_TAG
from loopline.demo.processes import tagged_pids
from loopline.demo.record import DemoRecord, segment_stats
from loopline.demo.scenario import Demo, DemoResult
from loopline.demo.settings import DemoSettings
from loopline.history.timeline import serving_at
from loopline.tracking import lineage


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    state = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(state_dir=state / "state", report_dir=state / "report").quick()
    return Demo(settings, keep=False).run()


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_loop_closes(quick_run: DemoResult) -> None:
    from mlflow import MlflowClient

    result = quick_run
    rec = result.record
    assert result.completed, "the demo stopped early: " + "; ".join(result.problems)

    # First champion serving, and traffic answered over both protocols before the change.
    first = result.first_champion
    assert first, "no first champion ever served"
    baseline = [r for r in rec.requests if r.segment == "baseline"]
    assert {r.protocol for r in baseline if r.ok} == {"rest", "grpc"}

    # Drift -> exactly one retraining run, with trigger drift.
    assert len(result.drift_runs) == 1, f"drift runs: {result.drift_runs}"
    assert len(rec.markers_of("retrain-requested")) == 1
    run = rec.runs[result.drift_runs[0]]
    assert run.trigger == "drift"
    assert run.model_version
    assert run.model_version != first

    # The new version beats the old one on the same fresh post-change data.
    comparison = rec.comparisons[-1]
    old, new = comparison.metrics[first], comparison.metrics[run.model_version]
    assert new["f1"] > old["f1"], comparison.metrics

    # The champion alias moved to the new version (in the registry, not only in status).
    client = MlflowClient(tracking_uri=result.tracking_uri, registry_uri=result.tracking_uri)
    champion = client.get_model_version_by_alias(result.model_uri_name, "champion")
    assert str(champion.version) == run.model_version
    assert rec.champion == run.model_version
    assert champion.run_id
    tags = client.get_run(champion.run_id).data.tags
    assert tags.get(lineage.TRIGGER) == "drift"
    assert tags.get(lineage.PARENT_VERSION) == first
    # It learnt the new recipe from the rows since the drift began, not the weeks before.
    assert tags.get(WINDOW_BASIS_TAG) == SINCE_DRIFT

    # The fallback answered while the sensor was dead, and nothing failed because of it.
    dead = segment_stats(rec)["dead-sensor"]
    assert dead.requests > 0
    assert dead.errors == 0
    assert dead.fallback_rate == 1.0

    # The report exists and every plot was drawn.
    assert result.report is not None
    assert "Not measured" not in result.report.read_text()

    # Its history section: the ledger, read as the run ended, says the new version serves.
    answer = serving_at(rec.history[f"{rec.namespace}/{rec.model}"], datetime.now(UTC))
    assert answer.state is not None
    assert answer.state.champion == run.model_version
    assert "<h2>Production history</h2>" in result.report.read_text()

    # No process left behind.
    assert result.leftovers == []
    assert tagged_pids(result.demo_id) == []


def test_report_written_even_when_the_loop_did_not_close(quick_run: DemoResult) -> None:
    assert quick_run.report is not None
    assert "Every number below" in quick_run.report.read_text()
    saved = DemoRecord.load(quick_run.report.parent / "record.json")
    assert len(saved.requests) == len(quick_run.record.requests) > 0
    assert [s.title for s in saved.steps] == [s.title for s in quick_run.record.steps]
