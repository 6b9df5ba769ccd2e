"""The demo's live view: the Model's state, its traffic and drift, and a log of steps.

`render()` is a pure function of a `DemoRecord` snapshot, so it is unit-tested by rendering
into a string; `LiveView` refreshes it with rich's `Live` on a terminal and falls back to one
plain line per step elsewhere (CI logs, pytest, a pipe), where redrawing would be noise.
"""

from __future__ import annotations

import math
import sys
from types import TracebackType
from typing import IO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from loopline.demo.alarms import (
    clock,
    fault_outcome,
    fault_sentence,
    stale_periods,
    stale_sentence,
)
from loopline.demo.callers import caller_stats
from loopline.demo.record import DemoRecord, Step
from loopline.demo.traffic_stats import TrafficStats, recent

STEPS_SHOWN = 8
ALARMS_SHOWN = 5
FEATURES_SHOWN = 6
_STATUS_STYLE = {"True": "green", "False": "dim", "Unknown": "yellow"}
_PHASE_STYLE = {
    "Serving": "bold green",
    "Training": "bold cyan",
    "Validating": "bold cyan",
    "Rolling out": "bold magenta",
    "RollingOut": "bold magenta",
    "Degraded": "bold yellow",
    "Failed": "bold red",
}


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _since(t: float, now: float) -> str:
    return f"{max(0.0, now - t):.0f}s ago"


def _model_panel(rec: DemoRecord, now: float) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row(
        "Model",
        f"models.loopline.dev/{rec.model} (namespace {rec.namespace})",
    )
    grid.add_row("Phase", Text(rec.phase or "-", style=_PHASE_STYLE.get(rec.phase, "bold")))
    grid.add_row("Champion", rec.champion or "-")
    grid.add_row("Challenger", rec.challenger or "-")
    grid.add_row("Scenario", rec.segment or "-")
    for name, url in rec.endpoints.items():
        grid.add_row(name, url)
    for name, url in rec.links.items():
        grid.add_row(name, url)
    runs = sorted(rec.runs.values(), key=lambda r: r.started_t or 0.0)
    if runs:
        run = runs[-1]
        step = f" · step {run.step}" if run.step else ""
        grid.add_row("Current run", f"{run.run_id} ({run.trigger or '?'}) {run.phase or '-'}{step}")
    conds = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    conds.add_column("Condition")
    conds.add_column("Status")
    conds.add_column("Reason")
    conds.add_column("Since", justify="right")
    for cond in sorted(rec.conditions.values(), key=lambda c: c.type):
        conds.add_row(
            cond.type,
            Text(cond.status, style=_STATUS_STYLE.get(cond.status, "")),
            cond.reason or "",
            _since(cond.t, now),
        )
    return Panel(Group(grid, conds), title="Model", border_style="blue")


def _alarm_panel(rec: DemoRecord) -> Panel:
    """The model's state and the latest alarm events: while the model is stale its threshold
    verdicts are counted, not shown as alarms, and real alarm events stay listed in red."""
    periods = stale_periods(rec.requests)
    states = [r.model_state for r in rec.requests if r.ok and r.model_state]
    lines: list[RenderableType] = []
    if periods and periods[-1].open:
        lines.append(Text(stale_sentence(periods[-1], rec.started_at), style="bold yellow"))
    elif states:
        style = "green" if states[-1] == "ok" else "yellow"
        lines.append(Text(f"model state: {states[-1]}", style=style))
        lines += [Text(stale_sentence(p, rec.started_at), style="dim") for p in periods]
    else:
        lines.append(Text("model state: not reported by the server", style="dim"))
    for fault in rec.injected_faults:
        outcome = fault_outcome(rec.requests, fault, periods)
        style = "bold red" if outcome.detected_t is not None else "magenta"
        lines.append(Text(fault_sentence(outcome, rec.started_at), style=style))
    events = [(r.t, m) for r in rec.requests if r.ok for m in r.alarm_starts]
    if events:
        for t, machine in recent(events, ALARMS_SHOWN):
            lines.append(Text(f"{clock(rec.started_at, t)} alarm event: {machine}", style="red"))
    else:
        lines.append(Text("no alarm event yet", style="dim"))
    return Panel(Group(*lines), title="Alarms (events, not rows)", border_style="red")


def _traffic_panel(stats: TrafficStats, held_back: int = 0) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_row("Requests/s", f"{stats.request_rate:.1f}")
    grid.add_row("Rows/s", f"{stats.row_rate:.0f}")
    grid.add_row("Latency p50", _fmt(stats.p50_ms, ".1f", " ms"))
    grid.add_row("Latency p99", _fmt(stats.p99_ms, ".1f", " ms"))
    anomaly = None if stats.anomaly_rate is None else stats.anomaly_rate * 100
    fallback = None if stats.fallback_rate is None else stats.fallback_rate * 100
    if held_back:
        # a stale model's verdicts: counted, not alarms (see the Alarms panel)
        text = Text(f"{_fmt(anomaly, '.1f', ' %')} (model stale: held back)", style="yellow")
        grid.add_row("Anomaly rate", text)
    else:
        grid.add_row("Anomaly rate", _fmt(anomaly, ".1f", " %"))
    grid.add_row("Fallback rate", _fmt(fallback, ".1f", " %"))
    grid.add_row("Errors", str(stats.errors))
    return Panel(grid, title="Traffic (last 10 s)", border_style="cyan")


def _callers_panel(rec: DemoRecord, now: float, window_s: float = 10.0) -> Panel:
    """Who sends what: the line's gateway (sync, per protocol) and the historian (async:
    queued, answered later), over the last window; the historian's waiting count is now."""
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    for name in ("caller", "path", "req/s", "rows/s", "errors", "waiting", "p50"):
        table.add_column(name, justify="left" if name in ("caller", "path") else "right")
    recent_stats = caller_stats(rec.requests, rec.async_requests, since=now - window_s, until=now)
    waiting = {
        s.caller: s.waiting for s in caller_stats([], rec.async_requests) if s.protocol == "async"
    }
    for s in recent_stats:
        path = "async (queued)" if s.protocol == "async" else s.protocol
        table.add_row(
            s.caller,
            path,
            f"{s.requests / window_s:.1f}",
            f"{s.rows / window_s:.0f}",
            str(s.errors),
            str(waiting.get(s.caller, 0)) if s.protocol == "async" else "-",
            _fmt(s.p50_ms, ".0f", " ms"),
        )
    if not recent_stats:
        table.add_row("-", "-", "-", "-", "-", "-", "-")
    return Panel(table, title="Callers (last 10 s)", border_style="cyan")


def _bar(p: float, width: int = 16) -> Text:
    """-log10(p) as a bar: longer is more surprising; red once p < 0.01."""
    strength = min(1.0, -math.log10(max(p, 1e-12)) / 6.0)
    filled = round(strength * width)
    style = "red" if p < 0.01 else "yellow" if p < 0.05 else "green"
    return Text("█" * filled + "·" * (width - filled), style=style)


def _drift_panel(rec: DemoRecord) -> Panel:
    if not rec.drift:
        return Panel(Text("no window tested yet", style="dim"), title="Drift", border_style="cyan")
    last = rec.drift[-1]
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    table.add_column("Feature")
    table.add_column("p-value", justify="right")
    table.add_column("")
    smallest = sorted(last.p_values.items(), key=lambda kv: kv[1])[:FEATURES_SHOWN]
    for name, p in smallest:
        table.add_row(name, f"{p:.2g}", _bar(p))
    flag = Text("DRIFT", style="bold red") if last.drift else Text("no drift", style="green")
    return Panel(Group(flag, table), title="Drift (smallest p-values)", border_style="cyan")


def _steps_panel(rec: DemoRecord) -> Panel:
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column(justify="right", style="dim", no_wrap=True)
    table.add_column()
    for step in recent(rec.steps, STEPS_SHOWN):
        line = Text(step.title, style="bold")
        if step.detail:
            line.append(f"  {step.detail}", style="")
        if step.command:
            line.append(f"\n$ {step.command}", style="dim cyan")
        table.add_row(f"{step.t:6.1f}s", line)
    return Panel(table, title="Steps (and how to see them yourself)", border_style="magenta")


def render(record: DemoRecord, *, now: float | None = None) -> RenderableType:
    """The whole live view for one moment of the record."""
    at = record.now() if now is None else now
    stats = record.traffic_stats(now=at)
    side = Table.grid(expand=True)
    side.add_column(ratio=1)
    side.add_column(ratio=1)
    held_back = sum(r.stale_anomalies for r in record.requests if r.ok and at - 10.0 <= r.t <= at)
    side.add_row(_traffic_panel(stats, held_back), _drift_panel(record))
    return Group(
        _model_panel(record, at),
        side,
        _callers_panel(record, at),
        _alarm_panel(record),
        _steps_panel(record),
    )


def step_line(step: Step) -> str:
    """One plain-text line (plus the command) for logs that cannot redraw."""
    text = f"[{step.t:7.1f}s] {step.title}"
    if step.detail:
        text += f" - {step.detail}"
    if step.command:
        text += f"\n           $ {step.command}"
    return text


class LiveView:
    """Redraw `render(record)` on a terminal; print steps line by line otherwise."""

    def __init__(
        self,
        record: DemoRecord,
        *,
        stream: IO[str] | None = None,
        live: bool | None = None,
        refresh_per_second: float = 2.0,
    ) -> None:
        self.record = record
        self.console = Console(file=stream or sys.stdout)
        self.live_mode = self.console.is_terminal if live is None else live
        self._live: Live | None = None
        self._refresh = refresh_per_second
        if not self.live_mode:
            record.on_step(self._print_step)

    def _print_step(self, step: Step) -> None:
        self.console.print(step_line(step), markup=False, highlight=False, soft_wrap=True)

    def __enter__(self) -> LiveView:
        if self.live_mode:
            self._live = Live(
                get_renderable=lambda: render(self.record.snapshot()),
                console=self.console,
                refresh_per_second=self._refresh,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def print(self, message: str) -> None:
        """A line above the live view (or plainly)."""
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)
