"""Counting scheduled batch runs for model usage: pure.

A scheduled run is counted when it leaves `status.batch.currentRun` for `lastRun`, in that
same status write, into `status.batch.usage` (per version and outcome: runs, rows, fallback
rows). The write is the transition, so a run is counted exactly once however often the
operator restarts: an operator that dies before the write finds the run still current and
counts it with the write it makes; one that dies after finds it counted. The operator's
/metrics exports these totals as they stand (`operators/batch_metrics.py`), never an
in-memory counter that a restart would lose or repeat.
"""

from __future__ import annotations

from loopline.types.batch import SCHEDULE_CALLER, USAGE_ENTRIES, BatchRunRecord, BatchUsage
from loopline.types.runs import RunPhase

__all__ = ["SCHEDULE_CALLER", "count_run", "outcome_of"]


def outcome_of(phase: RunPhase) -> str:
    return "ok" if phase == RunPhase.SUCCEEDED else "server_error"


def count_run(
    usage: list[BatchUsage], record: BatchRunRecord, fallback_rows: float | None
) -> list[BatchUsage]:
    """`usage` with one more finished run; the entry of its version and outcome moves last,
    and beyond USAGE_ENTRIES the entries not touched longest are dropped (their counters then
    end, as a retired server's do)."""
    version = record.model_version or ""
    outcome = outcome_of(record.phase)
    rest = [u for u in usage if (u.version, u.outcome) != (version, outcome)]
    found = next((u for u in usage if (u.version, u.outcome) == (version, outcome)), None)
    base = found or BatchUsage(version=version, outcome=outcome)
    counted = base.model_copy(
        update={
            "runs": base.runs + 1,
            "rows": base.rows + (record.rows or 0),
            "fallback_rows": base.fallback_rows + max(0, int(fallback_rows or 0)),
        }
    )
    return [*rest, counted][-USAGE_ENTRIES:]
