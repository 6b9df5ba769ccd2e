"""What a batch scoring run will do, decided before any data is read (pure functions).

Chunk sizes, the output's columns, the names it is registered under and the model reference
the user typed are all checked and computed here, so a wrong `--model` or an impossible
memory budget is refused with the option named before MLflow or Feast is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from loopline.models.bundle import ModelBundle
from loopline.models.pyfunc import MODEL_COLUMN, PROBABILITY_PREFIX
from loopline.types.common import Task, registered_model_name

VERSION_COLUMN = "model_version"
SCORED_AT_COLUMN = "scored_at"
# Bytes a row of one input column costs while a chunk is scored: the parquet row group, the
# arrow batch, the pandas frame, the float32 matrix, its NaN mask, the scorer's activations and
# the answer. At 64, benchmarks/bench_batch.py's peak was ~840 MiB above the ~260 MiB of
# imported libraries for a 512 MiB budget; the libraries are not in the budget.
BYTES_PER_VALUE = 100
MIN_CHUNK_ROWS = 1_000
MAX_CHUNK_ROWS = 1_000_000
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class BatchError(ValueError):
    """A batch run that cannot start or cannot go on; the message names the field to fix."""


@dataclass(frozen=True)
class ModelRef:
    namespace: str
    name: str

    @property
    def registered_name(self) -> str:
        return registered_model_name(self.namespace, self.name)


def batch_caller(given: str | None) -> str:
    """The caller a batch run is counted as in `loopline usage`: `--caller`, else the OS user,
    else `batch`; a label as the model servers' are (`callers.sanitize`). The identities a
    server verifies (`sa:`, `user:`, `unauthenticated`) cannot be claimed here."""
    import getpass

    from loopline.serving.callers import UNAUTHENTICATED, USER_PREFIX, VERIFIED_PREFIX, sanitize
    from loopline.types.batch import SCHEDULE_CALLER

    if given is None:
        try:
            given = getpass.getuser()
        except (KeyError, OSError):  # no user name in a container without a passwd entry
            given = "batch"
    label = sanitize(given)
    if label.startswith((VERIFIED_PREFIX, USER_PREFIX)) or label == UNAUTHENTICATED:
        raise BatchError(
            f"--caller {given!r}: sa:, user: and unauthenticated are what model servers verify; "
            "name the caller otherwise"
        )
    if label == SCHEDULE_CALLER:
        raise BatchError(
            f"--caller {given!r}: `schedule` is the caller of the operator's scheduled runs "
            "(spec.batch), counted from its metrics; name the caller otherwise"
        )
    return "batch" if label == "unknown" else label


def parse_model_ref(text: str) -> ModelRef:
    """`NS.NAME` or `NS/NAME` (the registered-model name or the resource's path)."""
    value = text.strip()
    sep = "/" if "/" in value else "."
    namespace, found, name = value.partition(sep)
    if not found or not _NAME.match(namespace) or not _NAME.match(name):
        raise BatchError(
            f"--model {text!r}: expected NAMESPACE.NAME or NAMESPACE/NAME (lower-case "
            "Kubernetes names, e.g. default.drill-ae)"
        )
    return ModelRef(namespace, name)


def chunk_rows(n_columns: int, budget_bytes: int) -> int:
    """Rows per chunk so one chunk's working set stays within `budget_bytes`.

    Clamped: below MIN_CHUNK_ROWS the per-chunk overhead (a parquet row group, a scorer
    call) dominates; above MAX_CHUNK_ROWS the kernels are no faster and memory only grows.
    """
    if n_columns < 1:
        raise BatchError(f"a chunk needs at least one column, got {n_columns}")
    if budget_bytes < MIN_CHUNK_ROWS * n_columns * BYTES_PER_VALUE:
        need = -(-MIN_CHUNK_ROWS * n_columns * BYTES_PER_VALUE // 2**20)
        raise BatchError(
            f"--memory-mib: {budget_bytes // 2**20} MiB cannot hold {MIN_CHUNK_ROWS} rows of "
            f"{n_columns} columns; give at least {need} MiB"
        )
    rows = budget_bytes // (n_columns * BYTES_PER_VALUE)
    return int(min(MAX_CHUNK_ROWS, rows))


def check_window(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and start >= end:
        raise BatchError(f"--start {start.isoformat()} is not before --end {end.isoformat()}")


def output_schema(bundle: ModelBundle, key_fields: list[pa.Field]) -> pa.Schema:
    """The scored file's columns: the row's keys, what the model said, who said it, when.

    The same columns the serving runtime answers with (`loopline.models.pyfunc`), so a
    reader of batch scores and of live predictions reads one shape."""
    if bundle.task == Task.ANOMALY_DETECTION:
        answer = [
            pa.field("anomaly_score", pa.float64()),
            pa.field("threshold", pa.float64()),
            pa.field("is_anomaly", pa.bool_()),
        ]
    else:
        answer = [
            pa.field("class_index", pa.int64()),
            pa.field("class_name", pa.string()),
            *[pa.field(PROBABILITY_PREFIX + c, pa.float64()) for c in bundle.class_names],
        ]
    return pa.schema(
        [
            *key_fields,
            *answer,
            pa.field(MODEL_COLUMN, pa.string()),
            pa.field(VERSION_COLUMN, pa.string()),
            pa.field(SCORED_AT_COLUMN, pa.timestamp("us", tz="UTC")),
        ]
    )


def view_name(ref: ModelRef) -> str:
    """The Feast feature view (and source) holding a Model's batch scores."""
    return "scores_" + re.sub(r"[^a-z0-9]+", "_", f"{ref.namespace}_{ref.name}")


def _stamp(value: datetime | None) -> str:
    return "open" if value is None else value.strftime("%Y%m%dT%H%M%SZ")


def output_file_name(version: str, start: datetime | None, end: datetime | None) -> str:
    """One file per run, named for what it holds, so re-scoring a window adds a file beside
    the old one (the view's `scored_at` picks the newest) instead of rewriting it."""
    return f"v{version}_{_stamp(start)}_{_stamp(end)}.parquet"
