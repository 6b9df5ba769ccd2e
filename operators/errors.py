"""Errors a backend raises, split by what the operator should do about them.

`BackendUnavailable` is temporary (a server is down, a disk is full): the operator marks the
resource Degraded with the message and retries with backoff. `BackendRejected` is permanent for
this spec (a pipeline that does not exist, a bad package): the resource goes Failed with the
message, and only a spec change retries.
"""

from __future__ import annotations


class BackendError(Exception):
    """Base of the backend errors; the message is shown to users, so make it actionable."""


class BackendUnavailable(BackendError):
    """Temporary: retry later."""


class BackendRejected(BackendError):
    """Permanent for this input: retrying the same request cannot succeed."""
