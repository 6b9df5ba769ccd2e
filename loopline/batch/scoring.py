"""Score chunks with a bundle the way the serving runtime does and stream them to parquet.

`predict_frame` is the pyfunc's own predict: rows with a missing non-core sensor go to the
core-sensor fallback and the `model` column says which answered. A row missing a core sensor,
which serving refuses, is kept here with no score and `model` = `unscored`: one dropout in
last week's production must not fail a run over millions of rows (the count is on the run). Each chunk becomes one row
group of the output, written to a temporary name and renamed when the last chunk is in, so a
reader (or the feature view over the folder) never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopline.batch.plan import SCORED_AT_COLUMN, VERSION_COLUMN, BatchError
from loopline.models.bundle import BundleError, ModelBundle
from loopline.models.pyfunc import FALLBACK, MODEL_COLUMN, predict_frame

UNSCORED = "unscored"


@dataclass(frozen=True)
class Tally:
    rows: int
    chunks: int
    fallback_rows: int
    unscored_rows: int  # a core sensor missing: neither model can score the row
    flagged_rows: int | None  # anomaly detection: rows with is_anomaly; None for classes
    input_hash: str  # sha256 over the scored inputs, chunk by chunk


def score_to_parquet(
    bundle: ModelBundle,
    chunks: Iterable[pd.DataFrame],
    keys: list[str],
    schema: pa.Schema,
    version: str,
    out_path: Path,
) -> Tally:
    """Score every chunk into `out_path`; nothing is left behind if no row was scored."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.partial")
    digest = hashlib.sha256()
    scored_at = pd.Timestamp(datetime.now(UTC))
    rows = n_chunks = fallback = unscored = 0
    flagged: int | None = 0 if "is_anomaly" in schema.names else None
    writer = pq.ParquetWriter(tmp, schema)
    try:
        for n_chunks, chunk in enumerate(chunks, start=1):  # noqa: B007 - counted for the tally
            inputs = chunk.drop(columns=keys)
            digest.update("\x1f".join(map(str, inputs.columns)).encode())
            digest.update(pd.util.hash_pandas_object(inputs, index=False).to_numpy().tobytes())
            answer = _answer(bundle, inputs, f"rows {rows + 1}-{rows + len(chunk)}")
            out = pd.concat(
                [chunk[keys].reset_index(drop=True), answer.reset_index(drop=True)], axis=1
            )
            out[VERSION_COLUMN] = version
            out[SCORED_AT_COLUMN] = scored_at
            writer.write_table(pa.Table.from_pandas(out, schema=schema, preserve_index=False))
            rows += len(chunk)
            fallback += int((answer[MODEL_COLUMN] == FALLBACK).sum())
            unscored += int((answer[MODEL_COLUMN] == UNSCORED).sum())
            if flagged is not None:
                flagged += int(answer["is_anomaly"].eq(True).sum())
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    if rows == 0:
        tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, out_path)
    return Tally(rows, n_chunks, fallback, unscored, flagged, digest.hexdigest())


def _answer(bundle: ModelBundle, inputs: pd.DataFrame, where: str) -> pd.DataFrame:
    """The model's answer per row; rows missing a core sensor come back unscored."""
    inputs = inputs.reset_index(drop=True)
    core = [c for c in bundle.core_feature_names if c in inputs.columns]
    missing_core = inputs[core].isna().any(axis=1)
    scorable = inputs[~missing_core]
    try:
        answer = predict_frame(bundle, scorable)
    except BundleError as exc:
        raise BatchError(f"{where}: {exc}") from exc
    if not missing_core.any():
        return answer
    full = answer.reindex(inputs.index)
    full[MODEL_COLUMN] = full[MODEL_COLUMN].where(~missing_core, UNSCORED)
    return full
