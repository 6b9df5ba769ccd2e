"""Batch scoring's pure parts: model references, chunk sizes, the output's columns, names,
and the version a run resolves to (against a real, empty SQLite MLflow)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from loopline.batch.plan import (
    BYTES_PER_VALUE,
    MAX_CHUNK_ROWS,
    MIN_CHUNK_ROWS,
    SCORED_AT_COLUMN,
    VERSION_COLUMN,
    BatchError,
    ModelRef,
    check_window,
    chunk_rows,
    output_file_name,
    output_schema,
    parse_model_ref,
    view_name,
)
from loopline.batch.reading import Source, iter_chunks, row_groups_in
from loopline.batch.versions import resolve_version
from loopline.models.pyfunc import MODEL_COLUMN, predict_frame, signature_of
from loopline.tracking.experiments import client_for
from loopline.tracking.registry import CHAMPION
from loopline.types.common import Task
from tests.fixtures.serving import make_bundle, sensor_rows


@pytest.mark.parametrize("text", ["default.drill-ae", "default/drill-ae", " default.drill-ae "])
def test_model_ref_takes_both_spellings(text: str) -> None:
    ref = parse_model_ref(text)
    assert ref == ModelRef("default", "drill-ae")
    assert ref.registered_name == "default.drill-ae"


@pytest.mark.parametrize("text", ["drill-ae", "Default.drill", "default.", "/x", "a.b_c"])
def test_model_ref_refuses_other_text_naming_the_option(text: str) -> None:
    with pytest.raises(BatchError, match="--model"):
        parse_model_ref(text)


def test_chunk_rows_follow_the_budget_within_bounds() -> None:
    mib = 2**20
    assert chunk_rows(10, 64 * mib) == 64 * mib // (10 * BYTES_PER_VALUE)
    assert chunk_rows(10, 64 * mib) < chunk_rows(10, 128 * mib)
    assert chunk_rows(1, 100_000 * mib) == MAX_CHUNK_ROWS
    assert chunk_rows(10, MIN_CHUNK_ROWS * 10 * BYTES_PER_VALUE) == MIN_CHUNK_ROWS


def test_chunk_rows_refuses_a_budget_too_small_naming_the_option() -> None:
    with pytest.raises(BatchError, match=r"--memory-mib: 0 MiB cannot hold .* at least 1 MiB"):
        chunk_rows(10, 100)
    with pytest.raises(BatchError, match="at least one column"):
        chunk_rows(0, 2**30)


def test_an_inverted_window_is_refused() -> None:
    t = datetime(2026, 3, 1, tzinfo=UTC)
    check_window(t, None)
    with pytest.raises(BatchError, match=r"--start .* is not before --end"):
        check_window(t, t)


@pytest.mark.parametrize("task", list(Task))
def test_output_schema_matches_the_pyfunc_signature(task: Task) -> None:
    bundle = make_bundle(task)
    keys = [pa.field("machine_id", pa.string()), pa.field("ts", pa.timestamp("ns", tz="UTC"))]
    schema = output_schema(bundle, keys)
    outputs = [c.name for c in signature_of(bundle).outputs.inputs]
    assert schema.names == ["machine_id", "ts", *outputs, VERSION_COLUMN, SCORED_AT_COLUMN]
    assert MODEL_COLUMN in schema.names
    frame = pd.DataFrame(sensor_rows(8, 0), columns=bundle.feature_names)
    answer = predict_frame(bundle, frame).assign(
        machine_id="m1", ts=pd.Timestamp("2026-03-01", tz="UTC")
    )
    answer[VERSION_COLUMN] = "1"
    answer[SCORED_AT_COLUMN] = pd.Timestamp.now(tz="UTC")
    table = pa.Table.from_pandas(answer, schema=schema, preserve_index=False)
    assert table.num_rows == 8


def test_names_of_the_view_and_the_file() -> None:
    assert view_name(ModelRef("plant-1", "drill-ae")) == "scores_plant_1_drill_ae"
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert output_file_name("3", start, None) == "v3_20260301T000000Z_open.parquet"


def test_chunks_are_bounded_and_cover_the_window(tmp_path: Path) -> None:
    ts = pd.date_range("2026-03-01", periods=10_000, freq="1min", tz="UTC")
    frame = pd.DataFrame({"machine_id": "m1", "ts": ts, "x": range(10_000)})
    path = tmp_path / "rows.parquet"
    frame.to_parquet(path, row_group_size=3_000)
    source = Source(path, "machine_id", "ts", ["machine_id", "ts", "x"], "test rows")
    start, end = ts[1_500].to_pydatetime(), ts[8_500].to_pydatetime()
    chunks = list(iter_chunks(source, start, end, rows=1_000))
    assert max(len(c) for c in chunks) <= 1_000
    got = pd.concat(chunks)["x"].tolist()
    assert got == list(range(1_500, 8_500))


def test_version_resolution_errors_name_the_option(training_mlflow_uri: str) -> None:
    client = client_for(training_mlflow_uri)
    with pytest.raises(BatchError, match=r"--model: no registered model 'ns\.m'"):
        resolve_version(client, "ns.m", None)
    client.create_registered_model("ns.m")
    client.create_model_version("ns.m", source="file:///nowhere")
    client.create_model_version("ns.m", source="file:///nowhere")
    with pytest.raises(BatchError, match=r"--version: 'ns.m' has no champion yet .*\['1', '2'\]"):
        resolve_version(client, "ns.m", None)
    with pytest.raises(BatchError, match=r"--version 7: 'ns.m' has no such version"):
        resolve_version(client, "ns.m", "7")
    with pytest.raises(BatchError, match="--version 'latest'"):
        resolve_version(client, "ns.m", "latest")
    assert resolve_version(client, "ns.m", "v2") == "2"
    client.set_registered_model_alias("ns.m", CHAMPION, "1")
    assert resolve_version(client, "ns.m", None) == "1"


def test_row_groups_outside_the_window_are_skipped(tmp_path: Path) -> None:
    ts = pd.date_range("2026-03-01", periods=10_000, freq="1min", tz="UTC")
    path = tmp_path / "rows.parquet"
    pd.DataFrame({"ts": ts, "x": range(10_000)}).to_parquet(path, row_group_size=2_500)
    meta = pq.ParquetFile(path).metadata
    assert row_groups_in(meta, "ts", None, None) == [0, 1, 2, 3]
    assert row_groups_in(meta, None, ts[0], ts[1]) == [0, 1, 2, 3]
    # [2_600, 5_000): group 1 (2_500-4_999) only; an end on a group's first row excludes it.
    assert row_groups_in(meta, "ts", ts[2_600], ts[5_000]) == [1]
    assert row_groups_in(meta, "ts", ts[2_499], None) == [0, 1, 2, 3]
    assert row_groups_in(meta, "ts", None, ts[2_500]) == [0]
    naive_start = ts[7_600].tz_localize(None).to_pydatetime()
    assert row_groups_in(meta, "ts", naive_start, None) == [3]
