"""The report's production-history section, from a ledger built here in its stored form (the
ledger's own keys and JSON, read back by `parse_entries`): the decisions in their order, what
served after each, and `--at`'s answers at the run's markers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

from loopline.demo.record import DemoRecord
from loopline.demo.report import RECORD_NAME, write_report
from loopline.demo.report_history import EVIDENCE_CHARS, evidence_summary
from loopline.history.ledger import decision_key, decision_ns, parse_entries
from loopline.types.history import MONITOR, OPERATOR, Decision

T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
REF = "demo/drill-ae"


class _Tables(HTMLParser):
    """The cells of each `<table class=...>`, row by row (a `<br>` inside a cell is a newline)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag == "td":
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _tables(doc: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(doc)
    return {k: [row for row in v if row] for k, v in parser.tables.items()}  # header rows out


def _decision(s: float, kind: str, actor: str = OPERATOR, **fields: object) -> Decision:
    return Decision.model_validate(
        {"at": T0 + timedelta(seconds=s), "kind": kind, "actor": actor, **fields}
    )


def _ledger() -> list[Decision]:
    """A first champion, drift, a retrained challenger walked through a canary, promoted;
    stored and read back the way the ledger keeps them (given out of order)."""
    one = {"champion": "1"}
    canary = {"champion": "1", "canary": "2"}
    made = [
        _decision(2, "Created", "kubectl-client-side-apply", message="<new>", serving={}),
        _decision(20, "TrainingSucceeded", version="1", evidence={"gate": "passed"}, serving={}),
        _decision(25, "Promoted", version="1", serving=one),
        _decision(
            70,
            "RetrainRequested",
            MONITOR,
            evidence={"trigger": "drift", "p_values": {"spindle_current": 1e-6}},
            serving=one,
        ),
        _decision(71, "TrainingStarted", version=None, evidence={"run": "run-2"}, serving=one),
        _decision(100, "TrainingSucceeded", version="2", serving={**canary, "weight": 10}),
        _decision(110, "CanaryStep", version="2", serving={**canary, "weight": 50}),
        _decision(120, "Promoted", version="2", serving={"champion": "2"}),
    ]
    entries = {}
    for d in reversed(made):
        text = d.to_json()
        entries[decision_key(decision_ns(d), text)] = text
    return parse_entries(entries)


def _record() -> DemoRecord:
    rec = DemoRecord(model="drill-ae", namespace="demo", started_at=T0)
    rec.mark("serving", "version 1", t=26.0)
    rec.mark("recipe-change", "recipe B", t=60.0)
    rec.mark("gate-passed", "version 2 beats the champion", t=101.0)
    rec.mark("promoted", "version 2", t=121.0)
    rec.ended_t = 175.0
    rec.set_history(REF, _ledger())
    return rec


def test_the_timeline_lists_the_ledgers_decisions_in_order(tmp_path: Path) -> None:
    rec = _record()
    tables = _tables(write_report(rec, tmp_path).read_text())
    rows = tables["history"]
    assert [(r[3], r[4]) for r in rows] == [
        ("Created", ""),
        ("TrainingSucceeded", "1"),
        ("Promoted", "1"),
        ("RetrainRequested", ""),
        ("TrainingStarted", ""),
        ("TrainingSucceeded", "2"),
        ("CanaryStep", "2"),
        ("Promoted", "2"),
    ]
    by_kind = {(r[3], r[4]): r for r in rows}
    drift = by_kind[("RetrainRequested", "")]
    assert drift[0] == "2026-03-02 03:01:10"
    assert drift[1] == "70.0"  # on the plots' axis
    assert drift[2] == MONITOR
    assert drift[6] == "p_values={spindle_current=1e-06}, trigger=drift"  # stored key order
    assert [r[7] for r in rows][-4:] == [
        "champion 1",
        "champion 1, canary 2 at 10%",
        "champion 1, canary 2 at 50%",
        "champion 2",
    ]
    assert rows[0][7] == "nothing"
    assert rows[0][5] == "<new>"  # escaped in the page, read back as text


def test_key_moments_are_answered_as_history_at_answers_them(tmp_path: Path) -> None:
    tables = _tables(write_report(_record(), tmp_path).read_text())
    answers = {row[0].split(" (t=")[0]: row[1].splitlines() for row in tables["serving-at"]}
    assert list(answers) == [
        "serving version 1",
        "recipe-change recipe B",
        "gate-passed version 2 beats the champion",
        "promoted version 2",
        "end of the run",
    ]
    assert answers["recipe-change recipe B"][0] == "at 2026-03-02T03:01:00Z: champion 1"
    assert "Promoted" in answers["recipe-change recipe B"][1]
    during = answers["gate-passed version 2 beats the champion"]
    assert during[0].endswith("champion 1, canary 2 taking 10% of traffic")
    assert "TrainingSucceeded" in during[2]
    assert answers["promoted version 2"][0].endswith("champion 2")
    assert re.search(r"champion because: \S+  Promoted +v2 ", answers["end of the run"][1])


def test_the_section_is_rebuilt_from_the_saved_record(tmp_path: Path) -> None:
    rec = _record()
    first = write_report(rec, tmp_path / "a").read_text()
    loaded = DemoRecord.load(tmp_path / "a" / RECORD_NAME)
    assert loaded.history == rec.history
    again = write_report(loaded, tmp_path / "b").read_text()
    assert _tables(again)["history"] == _tables(first)["history"]


def test_without_a_ledger_the_section_says_so(tmp_path: Path) -> None:
    doc = write_report(DemoRecord(), tmp_path).read_text()
    section = doc.split("<h2>Production history</h2>")[1].split("<h2>")[0]
    assert "Not measured in this run" in section
    empty = DemoRecord(started_at=T0)
    empty.set_history(REF, [])
    doc = write_report(empty, tmp_path / "empty").read_text()
    assert f"<code>{REF}</code>: 0 decisions" in doc
    assert _tables(doc).get("history", []) == []


def test_long_evidence_is_cut_on_one_line() -> None:
    summary = evidence_summary({"p_values": {f"sensor_{i}": 0.5 for i in range(40)}})
    assert len(summary) == EVIDENCE_CHARS
    assert summary.endswith("…")
    assert evidence_summary({"features": ["a", "b", "c", "d", "e"]}) == "features=[a, b, c, d, …]"
