"""Lineage tags and the training-set hash, built without MLflow."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from loopline.tracking.lineage import (
    LINEAGE_TAGS,
    NONE,
    PARENT_VERSION,
    TRIGGER,
    WINDOW_END,
    code_version,
    dataset_hash,
    lineage_tags,
    missing_lineage,
)
from loopline.types.common import Task, Trigger
from loopline.types.runs import TrainingRunSpec

SPEC = TrainingRunSpec(
    run_id="r-1",
    namespace="ns",
    model_name="drill-ae",
    task=Task.ANOMALY_DETECTION,
    trigger=Trigger.DRIFT,
    feature_service="all_sensors",
    registered_model_name="ns.drill-ae",
    mlflow_tracking_uri="sqlite:///x.db",
    feature_repo="feature_repo",
    window_end=datetime(2026, 1, 2, tzinfo=UTC),
)


def test_every_lineage_tag_is_set_and_nothing_else_is_missing() -> None:
    tags = lineage_tags(SPEC, data_hash="abc", data_rows=10, feature_views=["sensor_readings"])
    assert set(tags) == set(LINEAGE_TAGS)
    assert missing_lineage(tags) == []
    assert tags[TRIGGER] == "drift"
    assert tags[PARENT_VERSION] == NONE
    assert tags[WINDOW_END] == "2026-01-02T00:00:00+00:00"
    assert missing_lineage({**tags, TRIGGER: ""}) == [TRIGGER]


def test_dataset_hash_depends_on_values_and_columns_not_index() -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    assert dataset_hash(df) == dataset_hash(df.set_axis([7, 9]))
    assert dataset_hash(df) != dataset_hash(df.assign(a=[1.0, 2.5]))
    assert dataset_hash(df) != dataset_hash(df.rename(columns={"a": "c"}))


def test_code_version_is_a_commit_or_the_package_version() -> None:
    version = code_version()
    assert version.startswith(("git:", "loopline=="))
