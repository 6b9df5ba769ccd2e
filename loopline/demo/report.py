"""The demo's report: one HTML page with PNG plots, built only from what the run recorded.

Every plot and number here comes from the `DemoRecord` (which is saved beside the report as
`record.json`), so the report can be rebuilt from a finished run, and a section whose data the
run never produced says so instead of drawing something plausible.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loopline.demo.alarms import stale_periods
from loopline.demo.record import DemoRecord, Marker
from loopline.demo.report_alarms import alarms_html, plot_alarms, shade_stale
from loopline.demo.report_history import history_html
from loopline.demo.report_usage import usage_html
from loopline.demo.traffic_stats import segment_stats

REPORT_NAME = "report.html"
RECORD_NAME = "record.json"

# Markers drawn as vertical lines on the time plots, with their colours.
_MARKER_STYLE = {
    "recipe-change": ("tab:orange", "recipe change"),
    "retrain-requested": ("tab:red", "retraining requested"),
    "gate-started": ("tab:brown", "gate steps"),
    "registered": ("tab:purple", "challenger registered"),
    "gate-passed": ("tab:olive", "gate passed"),
    "promoted": ("tab:green", "new champion"),
    "sensor-dead": ("black", "sensor died"),
    "sensor-restored": ("grey", "sensor restored"),
}


def _vlines(ax: Axes, markers: list[Marker]) -> None:
    seen: set[str] = set()
    for m in markers:
        style = _MARKER_STYLE.get(m.kind)
        if style is None:
            continue
        colour, label = style
        ax.axvline(
            m.t,
            color=colour,
            linestyle="--",
            linewidth=1.2,
            label=None if m.kind in seen else label,
        )
        seen.add(m.kind)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_sensors(rec: DemoRecord, path: Path) -> Path | None:
    """Core sensor traces of the traced machine, anomalies marked, recipe change and the
    dead-sensor span shown."""
    if not rec.trace:
        return None
    features = rec.core_features or sorted({k for p in rec.trace for k in p.values})
    features = features[:4]
    fig, axes = plt.subplots(
        len(features) + 1, 1, figsize=(11, 1.8 * (len(features) + 1)), sharex=True
    )
    t = np.asarray([p.t for p in rec.trace])
    stale = np.asarray([p.model_state == "stale" for p in rec.trace])
    # a stale model's verdicts are held back, not alarms: drawn apart from the others
    held = np.asarray([bool(p.is_anomaly) for p in rec.trace]) & stale
    anomalous = np.asarray([bool(p.is_anomaly) for p in rec.trace]) & ~stale
    periods = stale_periods(rec.requests)
    end = max(float(t.max()), rec.ended_t or 0.0)
    fallback = np.asarray([p.model == "fallback" for p in rec.trace])
    for ax, name in zip(axes[:-1], features, strict=False):
        y = np.asarray(
            [np.nan if p.values.get(name) is None else p.values[name] for p in rec.trace],
            dtype=float,
        )
        ax.plot(t, y, linewidth=0.7, color="tab:blue")
        ax.scatter(t[anomalous], y[anomalous], s=10, color="tab:red", zorder=3, label="anomaly")
        if held.any():
            ax.scatter(
                t[held],
                y[held],
                s=10,
                facecolors="none",
                edgecolors="tab:orange",
                zorder=3,
                label="anomaly of a stale model (held back)",
            )
        ax.set_ylabel(name, fontsize=8)
        _vlines(ax, rec.markers)
        shade_stale(ax, periods, end)
    score_ax = axes[-1]
    scores = np.asarray([np.nan if p.score is None else p.score for p in rec.trace], dtype=float)
    thresholds = np.asarray(
        [np.nan if p.threshold is None else p.threshold for p in rec.trace], dtype=float
    )
    score_ax.plot(t, scores, linewidth=0.7, color="tab:gray", label="anomaly score")
    score_ax.plot(t, thresholds, linewidth=1.0, color="tab:red", label="threshold")
    if fallback.any():
        score_ax.scatter(
            t[fallback], scores[fallback], s=6, color="black", label="scored by fallback"
        )
    score_ax.set_yscale("symlog")
    score_ax.set_ylabel("score", fontsize=8)
    score_ax.set_xlabel("seconds since start")
    _vlines(score_ax, rec.markers)
    shade_stale(score_ax, periods, end)
    machine = rec.trace[0].machine_id
    axes[0].set_title(f"Core sensors of {machine} as the model server saw them")
    handles, labels = [], []
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    axes[0].legend(handles, labels, loc="upper left", fontsize=6, ncol=5, framealpha=0.8)
    return _save(fig, path)


def plot_drift(rec: DemoRecord, path: Path, p_value: float = 0.05) -> Path | None:
    """Per-feature p-values over time (log scale), with the retraining request marked."""
    if not rec.drift:
        return None
    fig, ax = plt.subplots(figsize=(12, 4))
    t = np.asarray([d.t for d in rec.drift])
    names = sorted({k for d in rec.drift for k in d.p_values})
    for name in names:
        p = np.asarray([d.p_values.get(name, np.nan) for d in rec.drift], dtype=float)
        ax.plot(t, np.clip(p, 1e-12, 1.0), linewidth=1.0, label=name)
    ax.axhline(p_value, color="tab:red", linewidth=0.8, linestyle=":", label=f"p = {p_value}")
    flagged = [d.t for d in rec.drift if d.drift]
    if flagged:
        ax.scatter(flagged, [1.2e-12] * len(flagged), marker="|", color="tab:red", label="drift")
    _vlines(ax, rec.markers)
    ax.set_yscale("log")
    ax.set_ylim(1e-12, 1.5)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("p-value")
    ax.set_title("Drift monitor: per-feature p-values of each window")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def plot_metrics(rec: DemoRecord, path: Path) -> Path | None:
    """Champion vs challenger on the same evaluation data, one bar group per metric."""
    if not rec.comparisons:
        return None
    comp = rec.comparisons[-1]
    versions = list(comp.metrics)
    metrics = sorted({m for v in comp.metrics.values() for m in v})
    if not versions or not metrics:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(versions)
    x = np.arange(len(metrics))
    for i, version in enumerate(versions):
        values = [comp.metrics[version].get(m, np.nan) for m in metrics]
        bars = ax.bar(x + i * width, values, width, label=f"version {version}")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x + width * (len(versions) - 1) / 2, metrics)
    ax.set_title(f"Both versions on {comp.dataset} ({comp.rows} rows)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_latency(rec: DemoRecord, path: Path) -> Path | None:
    """Latency histogram of successful requests, per protocol."""
    ok = [r for r in rec.requests if r.ok]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(8, 3.5))
    all_ms = np.asarray([r.latency_s * 1e3 for r in ok])
    bins = list(np.logspace(np.log10(max(all_ms.min(), 1e-2)), np.log10(all_ms.max() * 1.01), 40))
    for protocol in sorted({r.protocol for r in ok}):
        ms = [r.latency_s * 1e3 for r in ok if r.protocol == protocol]
        ax.hist(ms, bins=bins, alpha=0.6, label=f"{protocol} (n={len(ms)})")
    ax.set_xscale("log")
    ax.set_xlabel("round-trip latency (ms), client side")
    ax.set_ylabel("requests")
    ax.set_title("Inference latency")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_conditions(rec: DemoRecord, path: Path) -> Path | None:
    """The Model's phase and conditions as coloured spans over time."""
    if not rec.transitions:
        return None
    end = rec.ended_t if rec.ended_t is not None else max(x.t for x in rec.transitions) + 1
    types = ["Phase", *sorted({c.type for c in rec.transitions if c.type != "Phase"})]
    colours = {"True": "tab:green", "False": "lightgrey", "Unknown": "gold"}
    phase_colours = {
        "Pending": "lightgrey",
        "Training": "tab:cyan",
        "Validating": "tab:purple",
        "Rolling out": "tab:blue",
        "Serving": "tab:green",
        "Degraded": "gold",
        "Failed": "tab:red",
    }
    fig, ax = plt.subplots(figsize=(11, 0.5 * len(types) + 1.5))
    for row, type_ in enumerate(types):
        changes = [c for c in rec.transitions if c.type == type_]
        for i, c in enumerate(changes):
            stop = changes[i + 1].t if i + 1 < len(changes) else end
            colour = (
                phase_colours.get(c.status, "tab:olive")
                if type_ == "Phase"
                else colours.get(c.status, "tab:blue")
            )
            ax.broken_barh([(c.t, max(stop - c.t, 1e-3))], (row - 0.4, 0.8), color=colour)
            label = c.status if type_ == "Phase" else c.reason
            if label and stop - c.t > 0.04 * end:
                ax.text(c.t + 0.01 * end, row, label, va="center", fontsize=6)
    _vlines(ax, rec.markers)
    ax.set_yticks(range(len(types)), types)
    ax.set_xlim(0, end)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since start")
    ax.set_title("The Model's phase (top) and conditions (green: True)")
    return _save(fig, path)


_PLOTS: dict[str, tuple[str, Callable[[DemoRecord, Path], Path | None]]] = {
    "sensors.png": ("Sensor traces, recipe change and detected anomalies", plot_sensors),
    "alarms.png": ("Anomalous rows and alarm events, stale model shaded", plot_alarms),
    "drift.png": ("Drift p-values over time, retraining marked", plot_drift),
    "metrics.png": ("Champion vs challenger", plot_metrics),
    "latency.png": ("Latency", plot_latency),
    "conditions.png": ("Timeline of the Model's conditions", plot_conditions),
}


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def _summary_html(rec: DemoRecord) -> str:
    parts = []
    stages = rec.stage_durations()
    parts.append("<h2>The loop, stage by stage</h2>")
    parts.append(
        _table(
            ["stage", "seconds"],
            [[k.removesuffix("_s"), _num(v, ".1f")] for k, v in stages.items()],
        )
    )
    seg = segment_stats(rec)
    if seg:
        parts.append("<h2>Traffic by scenario segment</h2>")
        rows = []
        for name, s in seg.items():
            rows.append(
                [
                    name,
                    str(s.requests),
                    str(s.rows),
                    str(s.errors),
                    _num(s.p50_ms),
                    _num(s.p99_ms),
                    _num(None if s.anomaly_rate is None else 100 * s.anomaly_rate, ".1f"),
                    _num(None if s.fallback_rate is None else 100 * s.fallback_rate, ".1f"),
                    _num(None if s.held_back_rate is None else 100 * s.held_back_rate, ".1f"),
                    str(s.alarm_events),
                ]
            )
        parts.append(
            _table(
                [
                    "segment",
                    "requests",
                    "rows",
                    "errors",
                    "p50 ms",
                    "p99 ms",
                    "anomaly %",
                    "fallback %",
                    "held back % (model stale)",
                    "alarm events",
                ],
                rows,
            )
        )
    if rec.runs:
        parts.append("<h2>Training runs</h2>")
        parts.append(
            _table(
                ["run", "trigger", "phase", "started s", "ended s", "MLflow run", "version"],
                [
                    [
                        r.run_id,
                        r.trigger,
                        r.phase,
                        _num(r.started_t, ".1f"),
                        _num(r.ended_t, ".1f"),
                        r.mlflow_run_id,
                        r.model_version,
                    ]
                    for r in rec.runs.values()
                ],
            )
        )
    if rec.comparisons:
        comp = rec.comparisons[-1]
        metrics = sorted({m for v in comp.metrics.values() for m in v})
        parts.append(f"<h2>Champion vs challenger on {html.escape(comp.dataset)}</h2>")
        parts.append(
            _table(
                ["version", *metrics],
                [
                    [v, *[_num(comp.metrics[v].get(m), ".4f") for m in metrics]]
                    for v in comp.metrics
                ],
            )
        )
    if rec.versions:
        parts.append("<h2>MLflow lineage</h2>")
        keys = sorted({k for v in rec.versions.values() for k in v.tags})
        versions = sorted(
            rec.versions.values(), key=lambda v: int(v.version) if v.version.isdigit() else 0
        )
        rows = [
            ["aliases", *[", ".join(v.aliases) or "-" for v in versions]],
            ["run id", *[v.run_id for v in versions]],
        ]
        rows += [[k, *[v.tags.get(k, "") for v in versions]] for k in keys]
        metric_keys = sorted({k for v in versions for k in v.metrics})
        rows += [
            [f"metric: {k}", *[_num(v.metrics.get(k), ".4f") for v in versions]]
            for k in metric_keys
        ]
        parts.append(_table(["", *[f"version {v.version}" for v in versions]], rows))
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
code { background: #f5f5f5; padding: 1px 4px; }
.note { color: #8a4b00; }
.serving-at td:last-child { white-space: pre-wrap; font-family: monospace; }
"""


def write_report(record: DemoRecord, out_dir: Path) -> Path:
    """Write `report.html`, its PNGs and `record.json` into `out_dir`; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rec = record.snapshot()
    rec.save(out_dir / RECORD_NAME)
    sections = []
    for filename, (title, plot) in _PLOTS.items():
        produced = plot(rec, out_dir / filename)
        if produced is None:
            sections.append(
                f"<h2>{html.escape(title)}</h2><p class='note'>Not measured in this run.</p>"
            )
        else:
            sections.append(
                f"<h2>{html.escape(title)}</h2><img src='{html.escape(filename)}' alt='{html.escape(title)}'>"
            )
    steps = _table(
        ["t (s)", "step", "see it yourself"],
        [[f"{s.t:.1f}", f"{s.title} {s.detail}".strip(), s.command] for s in rec.steps],
    )
    links = "".join(
        f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in rec.links.items()
    )
    notes = "".join(f"<li class='note'>{html.escape(n)}</li>" for n in rec.notes)
    duration = rec.ended_t if rec.ended_t is not None else rec.now()
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Loopline demo: {html.escape(rec.model)}</title>
<style>{_CSS}</style></head><body>
<h1>Loopline demo: <code>models.loopline.dev/{html.escape(rec.model)}</code></h1>
<p>Started {html.escape(rec.started_at.isoformat(timespec="seconds"))}, ran {duration:.0f} s.
Champion at the end: version <b>{html.escape(rec.champion or "-")}</b>. Every number below
was measured in this run (<a href="{RECORD_NAME}">{RECORD_NAME}</a> holds the raw record).</p>
{f"<ul>{links}</ul>" if links else ""}
{f"<h2>What did not happen</h2><ul>{notes}</ul>" if notes else ""}
{_summary_html(rec)}
{alarms_html(rec)}
{usage_html(rec)}
{"".join(sections)}
{history_html(rec)}
<h2>Steps</h2>
{steps}
</body></html>
"""
    path = out_dir / REPORT_NAME
    path.write_text(doc)
    return path
