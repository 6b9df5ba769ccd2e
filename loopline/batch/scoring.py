"""Score chunks with a bundle the way the serving runtime does and stream them to parquet.

`predict_frame` is the pyfunc's own predict: rows with a missing non-core sensor go to the
core-sensor fallback and the `model` column says which answered. Each chunk becomes one row
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


@dataclass(frozen=True)
class Tally:
    rows: int
    chunks: int
    fallback_rows: int
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
    rows = n_chunks = fallback = 0
    flagged: int | None = 0 if "is_anomaly" in schema.names else None
    writer = pq.ParquetWriter(tmp, schema)
    try:
        for n_chunks, chunk in enumerate(chunks, start=1):  # noqa: B007 - counted for the tally
            inputs = chunk.drop(columns=keys)
            digest.update("\x1f".join(map(str, inputs.columns)).encode())
            digest.update(pd.util.hash_pandas_object(inputs, index=False).to_numpy().tobytes())
            try:
                answer = predict_frame(bundle, inputs)
            except BundleError as exc:
                raise BatchError(f"rows {rows + 1}-{rows + len(chunk)}: {exc}") from exc
            out = pd.concat(
                [chunk[keys].reset_index(drop=True), answer.reset_index(drop=True)], axis=1
            )
            out[VERSION_COLUMN] = version
            out[SCORED_AT_COLUMN] = scored_at
            writer.write_table(pa.Table.from_pandas(out, schema=schema, preserve_index=False))
            rows += len(chunk)
            fallback += int((answer[MODEL_COLUMN] == FALLBACK).sum())
            if flagged is not None:
                flagged += int(answer["is_anomaly"].sum())
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    if rows == 0:
        tmp.unlink(missing_ok=True)
    else:
        os.replace(tmp, out_path)
    return Tally(rows, n_chunks, fallback, flagged, digest.hexdigest())
