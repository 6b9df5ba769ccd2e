"""The report's production-history section: each Model's ledger as a timeline, and what was
serving at the demo's key moments.

The decisions come from the record (the scenario reads the ledgers before the cluster stops,
`DemoRecord.history`), so the section is rebuilt from `record.json` like the rest of the
report. "What was serving" is `loopline history --at`'s own answer (`serving_at`,
`describe_at`) at the wall-clock time of each marker the run recorded.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from loopline.demo.record import DemoRecord
from loopline.history.timeline import describe_at, serving_at
from loopline.types.history import Decision, ServingState

EVIDENCE_CHARS = 200
HEADER = [
    "time (UTC)",
    "t (s)",
    "actor",
    "decision",
    "version",
    "message",
    "evidence",
    "serving after",
]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return "{" + evidence_summary(value, limit=None) + "}"
    if isinstance(value, list | tuple):
        shown = ", ".join(_value(v) for v in value[:4])
        return f"[{shown}{', …' if len(value) > 4 else ''}]"
    return str(value)


def evidence_summary(evidence: Mapping[str, Any], limit: int | None = EVIDENCE_CHARS) -> str:
    """`key=value` pairs of a decision's evidence on one line, cut at `limit` characters (the
    whole evidence is in `loopline history -o json`)."""
    text = ", ".join(f"{k}={_value(v)}" for k, v in evidence.items())
    if limit is not None and len(text) > limit:
        return text[: limit - 1] + "…"
    return text


def serving_summary(state: ServingState | None) -> str:
    if state is None:
        return "-"
    if state.champion is None and state.canary is None:
        return "nothing"
    text = f"champion {state.champion or '-'}"
    if state.canary:
        text += f", canary {state.canary} at {state.weight}%"
    return text


def timeline_rows(rec: DemoRecord, decisions: Sequence[Decision]) -> list[list[str]]:
    """One row per decision, oldest first; `t` on the plots' axis (seconds since the start)."""
    rows = []
    for d in decisions:
        t = (d.at - rec.started_at).total_seconds()
        rows.append(
            [
                d.at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{t:.1f}",
                d.actor,
                d.kind,
                d.version or "",
                d.message,
                evidence_summary(d.evidence),
                serving_summary(d.serving),
            ]
        )
    return rows


def moment_rows(rec: DemoRecord, decisions: Sequence[Decision]) -> list[tuple[str, list[str]]]:
    """(moment, the lines of `loopline history --at` then) for each marker, and the end."""
    moments = [(f"{m.kind} {m.label}".strip(), m.t) for m in rec.markers]
    if rec.ended_t is not None:
        moments.append(("end of the run", rec.ended_t))
    out = []
    for name, t in moments:
        answer = serving_at(decisions, rec.started_at + timedelta(seconds=t))
        out.append((f"{name} (t={t:.1f} s)", describe_at(answer)))
    return out


def _rows_html(header: list[str], rows: list[list[str]], css: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table class='{css}'><tr>{head}</tr>{body}</table>"


def history_html(rec: DemoRecord) -> str:
    """The section: per Model, the timeline and the key moments' answers."""
    parts = ["<h2>Production history</h2>"]
    if not rec.history:
        parts.append("<p class='note'>Not measured in this run.</p>")
        return "\n".join(parts)
    for ref, decisions in rec.history.items():
        parts.append(
            f"<h3><code>{html.escape(ref)}</code>: {len(decisions)} decisions</h3>"
            "<p>Every decision the ledger kept (see it yourself: "
            f"<code>loopline history {html.escape(ref)}</code>).</p>"
        )
        parts.append(_rows_html(HEADER, timeline_rows(rec, decisions), "history"))
        moments = moment_rows(rec, decisions)
        if moments:
            parts.append(
                "<p>What was serving at the run's key moments, and why "
                f"(<code>loopline history {html.escape(ref)} --at TIME</code>):</p>"
            )
            body = "".join(
                f"<tr><td>{html.escape(name)}</td><td>"
                + "<br>".join(html.escape(line) for line in lines)
                + "</td></tr>"
                for name, lines in moments
            )
            parts.append(
                f"<table class='serving-at'><tr><th>moment</th><th>serving</th></tr>{body}</table>"
            )
    return "\n".join(parts)
