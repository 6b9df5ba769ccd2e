"""Batch scoring runs as usage rows: who scored how many rows with which model version.

A batch run (`loopline score`) is no request to a model server, and a short process is gone
before a Prometheus would scrape it. Scheduled runs (`spec.batch`) are counted by the operator,
which follows them to their end, in its `loopline_usage_*` series (`source="batch"`, caller
`schedule`; `operators/batch_metrics.py`), so they are left out here by default. Every run is
on record in MLflow, in its Model's experiment: tags `loopline.batch`,
`loopline.model_version`, `loopline.batch.caller` (`--caller`, else the OS user), the rows it
scored and how many the fallback scored. `loopline usage --tracking-uri` adds these rows to
the table, marked `batch`: one "request" per run, a FAILED run counted as a server error.

`batch_rows` is pure; `collect_batch` asks MLflow for the runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from loopline.monitoring.usage import Scope, UsageRow
from loopline.types.batch import SCHEDULE_CALLER

BATCH = "loopline.batch"
MODEL = "loopline.model"
NAMESPACE = "loopline.namespace"
VERSION = "loopline.model_version"
CALLER = "loopline.batch.caller"
ROWS = "loopline.data_rows"
FALLBACK_ROWS = "loopline.batch.fallback_rows"
SOURCE = "batch"
EXPERIMENT_PREFIX = "loopline/"


@dataclass(frozen=True)
class BatchRun:
    """What usage needs of one batch run."""

    model: str
    namespace: str
    version: str
    caller: str
    status: str  # MLflow's: FINISHED, FAILED, RUNNING, KILLED
    rows: float
    fallback_rows: float

    @classmethod
    def of(cls, tags: Mapping[str, str], status: str) -> BatchRun:
        def number(key: str) -> float:
            try:
                return float(tags.get(key, 0) or 0)
            except ValueError:
                return 0.0

        return cls(
            model=tags.get(MODEL, ""),
            namespace=tags.get(NAMESPACE, ""),
            version=tags.get(VERSION, ""),
            caller=tags.get(CALLER) or "batch",  # runs from before the tag existed
            status=status,
            rows=number(ROWS),
            fallback_rows=number(FALLBACK_ROWS),
        )


def batch_rows(
    runs: Iterable[BatchRun], scope: Scope | None = None, *, skip_scheduled: bool = True
) -> list[UsageRow]:
    """One usage row per model, version and caller; runs still going are not counted yet,
    and scheduled runs (caller `schedule`) only with `skip_scheduled` off: the operator's
    `loopline_usage_*` series count those already."""
    scope = scope or Scope()
    totals: dict[tuple[str, str, str], dict[str, float]] = {}
    for run in runs:
        if scope.name and run.model != scope.name:
            continue
        if scope.namespace and run.namespace != scope.namespace:
            continue
        if run.status in ("RUNNING", "SCHEDULED"):
            continue
        if skip_scheduled and run.caller == SCHEDULE_CALLER:
            continue
        key = (run.model, run.version, run.caller)
        total = totals.setdefault(key, {"requests": 0, "failed": 0, "rows": 0, "fallback": 0})
        total["requests"] += 1
        total["failed"] += run.status != "FINISHED"
        total["rows"] += run.rows
        total["fallback"] += run.fallback_rows
    return [
        UsageRow(
            model=model,
            version=version,
            caller=caller,
            requests=t["requests"],
            client_errors=0.0,
            server_errors=t["failed"],
            rows=t["rows"],
            fallback_rows=t["fallback"],
            p50_seconds=None,
            p95_seconds=None,
            p99_seconds=None,
            retired=None,
            source=SOURCE,
        )
        for (model, version, caller), t in sorted(totals.items())
    ]


def collect_batch(
    client: Any, scope: Scope, start: float, end: float, *, skip_scheduled: bool = True
) -> list[UsageRow]:
    """The batch runs started in [start, end) (unix seconds) of the Models in `scope`."""
    pattern = EXPERIMENT_PREFIX + (f"{scope.namespace}/" if scope.namespace else "%/")
    pattern += scope.name or "%"
    experiments = client.search_experiments(filter_string=f"name LIKE '{pattern}'")
    ids = [e.experiment_id for e in experiments]
    if not ids:
        return []
    query = (
        f"tags.`{BATCH}` = 'true' and attributes.start_time >= {int(start * 1000)} "
        f"and attributes.start_time < {int(end * 1000)}"
    )
    runs: list[BatchRun] = []
    token = None
    while True:
        page = client.search_runs(ids, filter_string=query, max_results=1000, page_token=token)
        runs.extend(BatchRun.of(r.data.tags, r.info.status) for r in page)
        token = page.token
        if not token:
            break
    return batch_rows(runs, scope, skip_scheduled=skip_scheduled)
