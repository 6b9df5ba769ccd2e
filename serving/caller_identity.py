"""Who a bearer token says the caller is, from the Kubernetes API server's TokenReview: pure.

A model server never trusts what a token claims about itself: the identity is the `user`
the API server returns for it (authentication.k8s.io/v1 TokenReview), so a ServiceAccount
token counts as `sa:<namespace>/<name>` only when the API server says it is valid.

Verification is a network call, so its verdicts are kept per token (keyed by the token's
SHA-256, never the token) in a `VerdictCache` with a time to live per kind of verdict: a
verified token for minutes, an invalid one for less (a token minted a second ago must not stay
invalid long), a failed review (API server down or slow) for seconds, so the next request
tries again soon without every request waiting on a server that is down. The cache is bounded:
past `max_entries` the least recently stored verdict goes.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

API_VERSION = "authentication.k8s.io/v1"
REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


class Outcome(StrEnum):
    VERIFIED = "verified"  # the API server vouched for the token: `username` is who it is
    INVALID = "invalid"  # the API server refused it (expired, forged, wrong audience)
    FAILED = "failed"  # no answer: API server unreachable, slow or refusing the review


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    username: str = ""
    reason: str = ""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive);
    None without one, or for another scheme (Basic credentials are not a caller identity)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_key(token: str) -> bytes:
    """What the cache keeps instead of the token: a leaked cache reveals no credential."""
    return hashlib.sha256(token.encode()).digest()


def review_body(token: str, audiences: Sequence[str]) -> dict[str, Any]:
    """The TokenReview to create. Without audiences the API server checks the token against
    its own (what `kubectl create token` and a pod's projected token carry by default)."""
    spec: dict[str, Any] = {"token": token}
    if audiences:
        spec["audiences"] = list(audiences)
    return {"apiVersion": API_VERSION, "kind": "TokenReview", "spec": spec}


def verdict_of(review: Mapping[str, Any], audiences: Sequence[str] = ()) -> Verdict:
    """The verdict of a created TokenReview. With audiences asked for, the API server must
    also name one of them in `status.audiences` (the API says a client has to check it)."""
    status = review.get("status")
    if not isinstance(status, Mapping):
        return Verdict(Outcome.FAILED, reason="TokenReview answer without a status")
    if status.get("authenticated") is not True:
        error = status.get("error")
        return Verdict(Outcome.INVALID, reason=str(error) if error else "not authenticated")
    user = status.get("user")
    username = user.get("username") if isinstance(user, Mapping) else None
    if not isinstance(username, str) or not username:
        return Verdict(Outcome.INVALID, reason="authenticated, but the review names no user")
    if audiences:
        granted = status.get("audiences") or []
        if not set(granted) & set(audiences):
            return Verdict(
                Outcome.INVALID,
                reason=f"token audiences {list(granted)} include none of {list(audiences)}",
            )
    return Verdict(Outcome.VERIFIED, username=username)


class VerdictCache:
    """Verdicts by token hash, each kept for its outcome's time to live; bounded."""

    def __init__(
        self,
        *,
        ttl_s: float,
        invalid_ttl_s: float,
        failure_ttl_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries {max_entries}: must be >= 1")
        self.ttl = {
            Outcome.VERIFIED: ttl_s,
            Outcome.INVALID: invalid_ttl_s,
            Outcome.FAILED: failure_ttl_s,
        }
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[float, Verdict]] = OrderedDict()

    def get(self, key: bytes) -> Verdict | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, verdict = found
        if self.clock() >= expires:
            del self._entries[key]
            return None
        return verdict

    def put(self, key: bytes, verdict: Verdict) -> None:
        ttl = self.ttl[verdict.outcome]
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self.clock() + ttl, verdict)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
