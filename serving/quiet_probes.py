"""Readiness polling without a log line per poll.

The local serving manager probes each server's readiness twice every `poll_s` for as long as
it runs, with httpx, which logs every request at INFO: `loopline serve run` printed ~70 such
lines before its endpoints and two a second after. The filter drops exactly those lines;
every other request httpx logs, and what the manager logs about readiness, stays.
"""

from __future__ import annotations

import logging
import re

_READINESS_REQUEST = re.compile(r'^HTTP Request: GET \S+/v2/(health|models/[^/\s]+)/ready "')


class _QuietReadinessPolls(logging.Filter):
    """Drops httpx's INFO line for each readiness probe (two every `poll_s`, for as long as
    a server runs: `loopline serve run` printed ~70 before its endpoints). Every other
    request httpx logs, and everything the manager itself logs about readiness, stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO and _READINESS_REQUEST.match(record.getMessage())
        )


def quiet_readiness_polls() -> None:
    """Install the filter on httpx's logger once per process."""
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _QuietReadinessPolls) for f in httpx_log.filters):
        httpx_log.addFilter(_QuietReadinessPolls())
