"""The report's usage section: who called which model version, as the model servers counted
it (`loopline_usage_*`, read from Prometheus as `loopline usage` reads it), beside what each
caller saw from its side (sent, answered, waiting, latency), the historian's queued requests
included.
"""

from __future__ import annotations

import html

from loopline.demo.callers import caller_stats
from loopline.demo.record import DemoRecord


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def usage_html(rec: DemoRecord) -> str:
    """The usage table per caller and version, and the callers' own view of their requests."""
    parts = ["<h2>Model usage per caller and version</h2>"]
    if rec.usage is None:
        parts.append("<p class='note'>Not measured in this run (see What did not happen).</p>")
    elif not rec.usage:
        parts.append("<p class='note'>Not measured in this run: Prometheus counted no request.</p>")
    else:
        parts.append(
            "<p>As the model server counted them (<code>loopline_usage_*</code>), read from "
            "the demo's Prometheus over the whole run the way <code>loopline usage</code> "
            "reads it. Latency is the time inside the runtime; a queued request's wait is not "
            "in it.</p>"
        )
        rows = []
        for u in rec.usage:
            errors = f"{u.errors:.0f}"
            share = u.errors / u.requests if u.requests else 0.0
            fallback = u.fallback_rows / u.rows if u.rows else 0.0
            rows.append(
                [
                    u.caller,
                    u.version,
                    f"{u.requests:.0f}",
                    f"{u.rows:.0f}",
                    errors,
                    f"{share:.1%}",
                    f"{fallback:.1%}",
                    _ms(u.p50_s),
                    _ms(u.p95_s),
                    _ms(u.p99_s),
                    {True: "yes", False: "no", None: "?"}[u.retired],
                ]
            )
        parts.append(
            _table(
                [
                    "caller",
                    "version",
                    "requests",
                    "rows",
                    "errors",
                    "error %",
                    "fallback %",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "retired",
                ],
                rows,
            )
        )
    stats = caller_stats(rec.requests, rec.async_requests)
    if stats:
        parts.append("<h3>The same traffic from the callers' side</h3>")
        parts.append(
            "<p>Latency here is the client's: the round trip for the gateway, from acceptance "
            "(<code>202</code>) to the answer fetched for the historian.</p>"
        )
        answered = {
            s.caller: sum(1 for a in rec.async_requests if a.caller == s.caller and a.ok)
            for s in stats
            if s.protocol == "async"
        }
        parts.append(
            _table(
                ["caller", "path", "sent", "rows", "answered", "errors", "waiting", "p50 ms"],
                [
                    [
                        s.caller,
                        "async (queued)" if s.protocol == "async" else s.protocol,
                        str(s.requests),
                        str(s.rows),
                        str(answered.get(s.caller, s.requests - s.errors)),
                        str(s.errors),
                        str(s.waiting) if s.protocol == "async" else "-",
                        "-" if s.p50_ms is None else f"{s.p50_ms:.1f}",
                    ]
                    for s in stats
                ],
            )
        )
    return "\n".join(parts)
