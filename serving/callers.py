"""Who called: the `caller` label of the model usage metrics, with bounded cardinality.

A caller names itself in the `Loopline-Caller` HTTP header (gRPC metadata
`loopline-caller`). The value becomes a Prometheus label, so anything a client sends must not
grow the server's series without bound: values are sanitized (at most 64 characters of
`[A-Za-z0-9._:/@-]`, anything else becomes `_`), and only callers on the configured
allow-list, or, without one, the first `max_callers` distinct callers the process sees, keep
their own label; the rest are counted as `other`. A request without the header is `unknown`.
The prefixes `sa:` and `user:` and the label `unauthenticated` are reserved for what a
verification says: a header that claims one of them is `other`.

A verified identity outranks the header: when a request carries a bearer token and the
Kubernetes API server verified it (`token_review`; the subject comes from its TokenReview,
never from the token's own unverified claims), the caller is `sa:<namespace>/<name>` for a
ServiceAccount (`system:serviceaccount:<namespace>:<name>`) and `user:<name>` for anyone
else, whatever the header says. A token the API server refused counts as `unauthenticated`.
A token that could not be verified (API server down or slow) leaves the header to decide.

The hot path is one dict lookup per request: labels are memoised by the raw header value, and
the memo is bounded too, so random header values cost a sanitize each, not memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HEADER = "loopline-caller"  # HTTP header names are case-insensitive; gRPC metadata is lowercase
HEADER_BYTES = HEADER.encode()
UNKNOWN = "unknown"
OTHER = "other"
MAX_LENGTH = 64
# A verified identity is never cut to MAX_LENGTH: two ServiceAccounts whose names share a long
# prefix must stay two callers. A namespace is at most 63 characters and a name 253.
VERIFIED_MAX_LENGTH = 320
DEFAULT_MAX_CALLERS = 50
UNAUTHENTICATED = "unauthenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
VERIFIED_PREFIX = "sa:"
USER_PREFIX = "user:"
_RESERVED_PREFIXES = (VERIFIED_PREFIX, USER_PREFIX)
# The subject of a request whose bearer token the API server refused. NUL is in no username.
INVALID_TOKEN = "\x00invalid-token"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:/@-]")
_MEMO_LIMIT = 1024


def sanitize(value: str, max_length: int = MAX_LENGTH) -> str:
    """A label value from what a client sent: trimmed, safe characters only, at most
    `max_length` long; an empty result is `unknown`."""
    cleaned = _UNSAFE.sub("_", value.strip()[:max_length])
    return cleaned or UNKNOWN


def service_account_caller(subject: str) -> str | None:
    """`sa:<namespace>/<name>` for a verified ServiceAccount subject, else None."""
    if not subject.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = subject[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    if not namespace or not name or ":" in name:
        return None
    return sanitize(f"{VERIFIED_PREFIX}{namespace}/{name}", VERIFIED_MAX_LENGTH)


def verified_caller(subject: str) -> str:
    """The label of a verified username: `sa:<namespace>/<name>` for a ServiceAccount,
    `user:<name>` for anyone else, `unauthenticated` for `INVALID_TOKEN`."""
    if subject == INVALID_TOKEN:
        return UNAUTHENTICATED
    account = service_account_caller(subject)
    return account or sanitize(f"{USER_PREFIX}{subject}", VERIFIED_MAX_LENGTH)


def token_required(subject: str | None) -> str:
    """The 401 message of `require_caller_token`: what was wrong, and which header to send."""
    what = "the bearer token was refused by the Kubernetes API server" if subject else "no token"
    return (
        f"this model server requires a caller token ({what}): send 'Authorization: Bearer "
        "<Kubernetes ServiceAccount token>' (gRPC metadata 'authorization')"
    )


def _claims_reserved(label: str) -> bool:
    return label.startswith(_RESERVED_PREFIXES) or label == UNAUTHENTICATED


class CallerLabels:
    """Maps what a request says about its caller to a bounded set of label values."""

    def __init__(self, allowed: Iterable[str] = (), max_callers: int = DEFAULT_MAX_CALLERS) -> None:
        if max_callers < 0:
            raise ValueError(f"max_callers {max_callers}: must be >= 0")
        self.allowed = frozenset(sanitize(a) for a in allowed)
        self.max_callers = max_callers
        self._seen: set[str] = set()
        self._memo: dict[str | None, str] = {None: UNKNOWN, "": UNKNOWN}

    def label(self, header: str | None, subject: str | None = None) -> str:
        """The caller label of one request: the verified `subject` first (a username the API
        server vouched for, or `INVALID_TOKEN`), then the `Loopline-Caller` header value,
        then `unknown`."""
        if subject is not None:
            verified = verified_caller(subject)
            return UNAUTHENTICATED if verified == UNAUTHENTICATED else self._admit(verified)
        found = self._memo.get(header)
        if found is not None:
            return found
        assert header is not None  # None is memoised as unknown
        claimed = sanitize(header)
        label = OTHER if _claims_reserved(claimed) else self._admit(claimed)
        if len(self._memo) < _MEMO_LIMIT:
            self._memo[header] = label
        return label

    def _admit(self, caller: str) -> str:
        if caller == UNKNOWN:
            return UNKNOWN
        if self.allowed:
            return caller if caller in self.allowed else OTHER
        if caller in self._seen:
            return caller
        if len(self._seen) < self.max_callers and caller != OTHER:
            self._seen.add(caller)
            return caller
        return OTHER

    @property
    def callers(self) -> frozenset[str]:
        """The callers that kept their own label so far (allow-list: the list)."""
        return self.allowed or frozenset(self._seen)
