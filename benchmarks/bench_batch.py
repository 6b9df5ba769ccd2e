"""Batch inference: rows/s and peak memory of `loopline score` on a 10-million-row window.

Three child processes read the same generated parquet, each measured on its own (peak RSS is
the kernel's VmHWM of that process):

- `score`: the whole batch run (`loopline.batch.job.run_batch`: resolve the champion in a real
  SQLite MLflow, read the offline store in chunks, score, write parquet, register the Feast
  view, record the MLflow run); its `seconds` include loading the model and applying the view,
  `scoring_loop_rows_per_second` is the read-score-write loop alone (as logged on the run);
- `read`: the same chunked scan of the same window with no scoring: the I/O floor, so
  `score_vs_read_rows_per_second` says what scoring costs on top of reading;
- `whole`: `pandas.read_parquet` of the same columns at once, the unchunked way (reading
  alone; scoring it whole would add the float32 matrix, the activations and the answers);
- `score` again on the first tenth of the window: `score_peak_rss_vs_tenth` near 1 says the
  peak does not grow with the window.

The data: the generator's 20 machines x 1 day of one-minute readings (28,800 rows, with its
faults and sensor dropouts), repeated day after day until the row count is reached, written in
row groups of about half a million rows. `LOOPLINE_BENCH_BATCH_ROWS` sets the count (default
10,000,000), `LOOPLINE_BENCH_BATCH_MIB` the chunk budget (default 512, the CLI's).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.common import write_results
from loopline import quiet

ROWS = int(os.environ.get("LOOPLINE_BENCH_BATCH_ROWS", "10000000"))
MEMORY_MIB = int(os.environ.get("LOOPLINE_BENCH_BATCH_MIB", "512"))
GROUP_ROWS = 500_000


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write_rows(path: Path, rows: int) -> None:
    """`rows` generated readings, a day's worth repeated with its timestamps shifted."""
    from loopline.data.generator import GeneratorConfig, generate

    day, _ = generate(GeneratorConfig(machines=20, days=1, interval_seconds=60, seed=3))
    table = pa.Table.from_pandas(day, preserve_index=False)
    per_group = max(1, GROUP_ROWS // len(day))
    ts = "event_timestamp"
    written = shift = 0
    with pq.ParquetWriter(path, table.schema) as writer:
        while written < rows:
            parts = []
            for _ in range(per_group):
                part = day.assign(**{ts: day[ts] + timedelta(days=shift)})
                parts.append(part)
                shift += 1
            block = pd.concat(parts, ignore_index=True).head(rows - written)
            writer.write_table(
                pa.Table.from_pandas(block, schema=table.schema, preserve_index=False)
            )
            written += len(block)


def child(kind: str, repo: Path, tracking_uri: str, end: str | None) -> dict[str, Any]:
    """One measurement in this process (called as `python -m benchmarks.bench_batch`)."""
    quiet.apply()
    from loopline.batch.job import BatchRequest, run_batch
    from loopline.batch.plan import ModelRef, chunk_rows
    from loopline.batch.reading import iter_chunks, store_source
    from loopline.data.schema import factory_schema

    schema = factory_schema()
    extra: dict[str, Any] = {}
    before = _rss_mib()
    began = time.perf_counter()
    if kind == "score":
        result = run_batch(
            BatchRequest(
                model=ModelRef("bench", "batch-ae"),
                tracking_uri=tracking_uri,
                repo=repo,
                end=None if end is None else datetime.fromisoformat(end),
                memory_mib=MEMORY_MIB,
            )
        )
        rows, chunks = result.tally.rows, result.tally.chunks
        from loopline.tracking.experiments import client_for

        logged = client_for(tracking_uri).get_run(result.mlflow_run_id).data.metrics
        extra = {
            "scoring_loop_rows_per_second": round(logged["batch_rows_per_second"]),
            "fallback_rows": result.tally.fallback_rows,
            "unscored_rows": result.tally.unscored_rows,
        }
    elif kind == "read":
        source = store_source(repo, schema.feature_names, schema.core_feature_names)
        size = chunk_rows(len(source.columns), MEMORY_MIB * 2**20)
        rows = chunks = 0
        for chunks, chunk in enumerate(iter_chunks(source, None, None, size), start=1):  # noqa: B007
            rows += len(chunk)
    else:
        source = store_source(repo, schema.feature_names, schema.core_feature_names)
        rows, chunks = len(pd.read_parquet(source.path, columns=source.columns)), 1
    seconds = time.perf_counter() - began
    return {
        "rows": rows,
        "chunks": chunks,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "rss_after_imports_mib": round(before, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        **extra,
    }


def _run_child(kind: str, repo: Path, tracking_uri: str, end: str = "") -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_batch", kind, str(repo), tracking_uri, end],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench_batch {kind} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> Path:
    quiet.apply()
    from loopline.data import features
    from loopline.data.schema import factory_schema
    from tests.fixtures.training import train_and_register_model

    with tempfile.TemporaryDirectory(prefix="loopline-bench-batch-") as tmp:
        root = Path(tmp)
        tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        model = train_and_register_model(tracking_uri, namespace="bench", model="batch-ae")
        big = root / "readings.parquet"
        began = time.perf_counter()
        write_rows(big, ROWS)
        generate_s = time.perf_counter() - began
        # The repository is made over a small file (it validates and reads what it is given),
        # then pointed at the big one: the same views, without reading 10M rows to make them.
        repo = root / "repo"
        features.create_repo(repo, model.data, factory_schema(), rolling=False)
        spec = features.RepoSpec.load(repo)
        spec.source = str(big)
        spec.save(repo)
        features.apply(repo)
        runs = {kind: _run_child(kind, repo, tracking_uri) for kind in ("read", "score", "whole")}
        # A tenth of the window: its peak next to the whole window's shows memory is flat.
        first = pd.read_parquet(big, columns=["event_timestamp"]).iloc[:, 0]
        tenth_end = first.min() + (first.max() - first.min()) / 10
        runs["tenth"] = _run_child("score", repo, tracking_uri, tenth_end.isoformat())
        del first
        size_mib = big.stat().st_size / 2**20
    score, read, whole, tenth = runs["score"], runs["read"], runs["whole"], runs["tenth"]
    return write_results(
        "batch",
        {
            "rows": ROWS,
            "parquet_mib": round(size_mib, 1),
            "generate_seconds": round(generate_s, 1),
            "memory_budget_mib": MEMORY_MIB,
            "score": score,
            "read_chunked_baseline": read,
            "read_whole_baseline": whole,
            "score_tenth_of_the_window": tenth,
            "score_peak_rss_vs_tenth": round(score["peak_rss_mib"] / tenth["peak_rss_mib"], 3),
            "score_vs_read_rows_per_second": round(
                score["rows_per_second"] / read["rows_per_second"], 3
            ),
            "score_peak_rss_vs_whole_read": round(score["peak_rss_mib"] / whole["peak_rss_mib"], 3),
        },
    )


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4] or None)))
