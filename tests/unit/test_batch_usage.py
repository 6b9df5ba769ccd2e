"""Batch scoring runs in the usage table: counted per model, version and caller."""

from __future__ import annotations

import pytest

from loopline.batch.plan import BatchError, batch_caller
from loopline.monitoring.batch_usage import BatchRun, batch_rows
from loopline.monitoring.usage import Scope, as_text


def run(caller: str, status: str = "FINISHED", rows: float = 100, **kw: str) -> BatchRun:
    tags = {
        "loopline.model": kw.get("model", "drill-ae"),
        "loopline.namespace": kw.get("namespace", "plant"),
        "loopline.model_version": kw.get("version", "3"),
        "loopline.batch.caller": caller,
        "loopline.data_rows": str(rows),
        "loopline.batch.fallback_rows": "10",
    }
    return BatchRun.of(tags, status)


def test_runs_are_summed_per_version_and_caller_failed_ones_as_errors() -> None:
    runs = [
        run("planning"),
        run("planning", rows=50),
        run("planning", status="FAILED", rows=0),
        run("qa", version="2"),
        run("qa", status="RUNNING"),  # not done: not counted yet
        run("qa", model="press-ae"),
        run("qa", namespace="lab"),
    ]
    rows = batch_rows(runs, Scope("drill-ae", "plant"))
    assert [(r.version, r.caller, r.requests, r.server_errors, r.rows) for r in rows] == [
        ("2", "qa", 1, 0, 100),
        ("3", "planning", 3, 1, 150),
    ]
    planning = rows[1]
    assert planning.fallback_rows == 30
    assert planning.source == "batch"
    assert planning.p50_seconds is None
    assert "planning (batch)" in as_text(rows)
    # no scope: every model; namespaces merge, as the model servers' `model` label does
    assert len(batch_rows(runs)) == 4


def test_a_run_from_before_the_caller_tag_is_batch() -> None:
    tags = {"loopline.model": "drill-ae", "loopline.model_version": "1"}
    assert BatchRun.of(tags, "FINISHED").caller == "batch"
    assert BatchRun.of({**tags, "loopline.data_rows": "x"}, "FINISHED").rows == 0


def test_the_batch_caller_is_a_label_and_cannot_claim_a_verified_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert batch_caller("planning team") == "planning_team"
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    assert batch_caller(None) == "alice"

    def no_user() -> str:
        raise KeyError("uid 10001 has no passwd entry")

    monkeypatch.setattr("getpass.getuser", no_user)
    assert batch_caller(None) == "batch"
    assert batch_caller("  ") == "batch"
    for claimed in ("sa:plant/historian", "user:alice", "unauthenticated"):
        with pytest.raises(BatchError, match="--caller"):
            batch_caller(claimed)
