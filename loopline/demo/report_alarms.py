"""The report's alarm section: the stale periods, and alarm events rather than rows.

Between the recipe change and the new champion the old model flags nearly every row; the
server labels those answers `model_state: stale` and its alarm events follow a drift-robust
verdict instead. This section shows that period as such: when the model went stale, when the
new champion took over, the anomalous rows held back against the alarm events raised, and the
alarm events per machine before, during and after.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from loopline.demo.alarms import (
    StalePeriod,
    alarm_events_by_machine,
    clock,
    fault_outcome,
    fault_sentence,
    stale_model_events,
    stale_periods,
    stale_sentence,
)
from loopline.demo.record import DemoRecord, RequestSample

STALE_COLOUR = "gold"
BINS = 60


def shade_stale(ax: Axes, periods: Sequence[StalePeriod], end: float) -> None:
    """The stale periods as shaded spans (one legend entry)."""
    for i, p in enumerate(periods):
        stop = end if p.end_t is None else p.end_t
        ax.axvspan(
            p.start_t,
            stop,
            color=STALE_COLOUR,
            alpha=0.25,
            label="model stale" if i == 0 else None,
        )


def _end(rec: DemoRecord) -> float:
    last = max((r.t for r in rec.requests), default=0.0)
    return max(rec.ended_t or 0.0, last)


def plot_alarms(rec: DemoRecord, path: Path) -> Path | None:
    """Anomalous rows (those held back apart) and alarm events over time, stale span shaded."""
    ok = [r for r in rec.requests if r.ok]
    if not ok or not any(r.model_state for r in ok):
        return None
    periods = stale_periods(ok)
    end = _end(rec)
    edges = np.linspace(0.0, max(end, 1e-3), BINS + 1)
    t = np.asarray([r.t for r in ok])
    held = np.asarray([r.stale_anomalies for r in ok], dtype=float)
    flagged = np.asarray([r.anomalies for r in ok], dtype=float) - held
    events_t = [r.t for r in ok for _ in r.alarm_starts]
    width = edges[1] - edges[0]
    fig, (rows_ax, events_ax) = plt.subplots(2, 1, figsize=(11, 4.5), sharex=True)
    held_sum = np.histogram(t, bins=edges, weights=held)[0]
    flagged_sum = np.histogram(t, bins=edges, weights=flagged)[0]
    rows_ax.bar(edges[:-1], flagged_sum, width, align="edge", color="tab:gray", label="anomalous")
    rows_ax.bar(
        edges[:-1],
        held_sum,
        width,
        bottom=flagged_sum,
        align="edge",
        color="tab:orange",
        label="anomalous, stale model (held back)",
    )
    rows_ax.set_ylabel("rows", fontsize=8)
    rows_ax.set_title("Anomalous rows and alarm events (events raise alarms, rows do not)")
    events_ax.bar(
        edges[:-1],
        np.histogram(events_t, bins=edges)[0],
        width,
        align="edge",
        color="tab:red",
        label="alarm events started",
    )
    events_ax.set_ylabel("alarm events", fontsize=8)
    events_ax.set_xlabel("seconds since start")
    for ax in (rows_ax, events_ax):
        shade_stale(ax, periods, end)
        for m in rec.markers:
            if m.kind in ("recipe-change", "promoted"):
                label = "recipe change" if m.kind == "recipe-change" else "new champion"
                colour = "tab:orange" if m.kind == "recipe-change" else "tab:green"
                ax.axvline(m.t, color=colour, linestyle="--", linewidth=1.2, label=label)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _promoted_after(rec: DemoRecord, period: StalePeriod) -> float | None:
    """When the new champion was promoted (the operator's marker) after the period began."""
    times = [m.t for m in rec.markers if m.kind == "promoted" and m.t >= period.start_t]
    return min(times, default=None)


def _fault_html(
    rec: DemoRecord, ok: Sequence[RequestSample], periods: Sequence[StalePeriod]
) -> str:
    """The fault injected while the model was stale, and every alarm event the stale model's
    answers started in a stale period: the injected fault's and, if any, false ones."""
    parts = []
    for fault in rec.injected_faults:
        outcome = fault_outcome(ok, fault, periods)
        parts.append(f"<p><b>{html.escape(fault_sentence(outcome, rec.started_at))}</b>.</p>")
    events = stale_model_events(ok, periods)
    if not periods:
        return "\n".join(parts)
    if not events:
        parts.append("<p>The stale model's answers started no alarm event.</p>")
        return "\n".join(parts)
    faulty = {f.machine_id for f in rec.injected_faults}
    rows = []
    for t, machine, labelled in events:
        injected = any(
            f.machine_id == machine and f.start_t <= t and (f.end_t is None or t <= f.end_t)
            for f in rec.injected_faults
        )
        why = (
            "the injected fault" if injected else "a labelled fault" if labelled else "none (false)"
        )
        rows.append([f"{t:.1f} ({clock(rec.started_at, t)})", machine, why])
    parts.append(
        f"<p>Alarm events the stale model's answers started ({len(events)}; machines with an "
        f"injected fault: {html.escape(', '.join(sorted(faulty)) or '-')}):</p>"
    )
    parts.append(_table(["t (s)", "machine", "fault behind it"], rows))
    return "\n".join(parts)


def alarms_html(rec: DemoRecord) -> str:
    """The stale periods and alarm events per machine, or why they were not measured."""
    ok = [r for r in rec.requests if r.ok]
    title = "<h2>Stale model and alarm events</h2>"
    if not any(r.model_state for r in ok):
        return f"{title}<p class='note'>Not measured in this run: the model server sent no model_state.</p>"
    periods = stale_periods(ok)
    parts = [title]
    if not periods:
        parts.append("<p>The model was never stale in this run.</p>")
    for p in periods:
        parts.append(f"<p><b>{html.escape(stale_sentence(p, rec.started_at))}</b>.</p>")
    if periods:
        rows = []
        for p in periods:
            promoted = _promoted_after(rec, p)
            rows.append(
                [
                    f"{p.start_t:.1f} ({clock(rec.started_at, p.start_t)})",
                    "-" if p.end_t is None else f"{p.end_t:.1f} ({clock(rec.started_at, p.end_t)})",
                    f"{p.duration(_end(rec)):.1f}",
                    ", ".join(p.versions),
                    p.successor or "-",
                    "-" if promoted is None else f"{promoted:.1f}",
                    str(p.rows),
                    str(p.anomalous_rows),
                    str(p.held_back),
                    str(p.alarm_events),
                    str(p.fault_alarm_events),
                    ", ".join(sorted(set(p.alarm_machines))) or "-",
                ]
            )
        parts.append(
            _table(
                [
                    "stale from (s)",
                    "until (s)",
                    "seconds",
                    "stale version",
                    "then version",
                    "new champion promoted (s)",
                    "rows",
                    "anomalous rows",
                    "held back",
                    "alarm events",
                    "of them on a labelled fault",
                    "machines alarmed",
                ],
                rows,
            )
        )
    parts.append(_fault_html(rec, ok, periods))
    by_machine = alarm_events_by_machine(ok, periods)
    if by_machine:
        parts.append("<h3>Alarm events per machine</h3>")
        parts.append(
            _table(
                ["machine", "before stale", "during stale", "after stale"],
                [
                    [m, str(c["before"]), str(c["during"]), str(c["after"])]
                    for m, c in by_machine.items()
                ],
            )
        )
    else:
        parts.append("<p>No alarm event was raised in this run.</p>")
    return "\n".join(parts)
