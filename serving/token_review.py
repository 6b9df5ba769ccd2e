"""Verifying callers' bearer tokens with the Kubernetes API server, off the hot path.

Every host (the lean server's REST, gRPC and asynchronous routes, and the MLServer host
through `LooplineRuntime.predict`) asks one `CallerVerifier` per process who a request's
bearer token belongs to. It answers from its cache (`caller_identity.VerdictCache`) when it
can; otherwise it creates one TokenReview for that token (one at a time per token however
many requests carry it) and waits for it at most `wait_s`. A review still running after that
finishes in the background and fills the cache, while the request is counted by its
`Loopline-Caller` header. A review that fails (API server unreachable, answering an error, or
slower than its timeout) also leaves the header to decide, and stops every new review for
`failure_ttl_s`, so a down API server costs one bounded wait, not one per request.

What a server needs for it: a Kubernetes client configuration (in a pod its own
ServiceAccount token, in-cluster; elsewhere `caller_kubeconfig` or the default kubeconfig) and
`create` on `tokenreviews` (authentication.k8s.io) for that identity.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import httpx
from prometheus_client import REGISTRY, CollectorRegistry, Counter

from loopline.serving.caller_identity import (
    REVIEW_PATH,
    Outcome,
    Verdict,
    VerdictCache,
    bearer_token,
    review_body,
    token_key,
    verdict_of,
)
from loopline.serving.callers import INVALID_TOKEN, token_required
from loopline.serving.settings import ServingSettings

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 64  # distinct tokens under review at once; more are counted by the header


class ReviewFailed(Exception):
    """The API server gave no verdict; the message says why."""


class Reviewer(Protocol):
    async def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]: ...


class KubeTokenReviewer:
    """Creates TokenReviews over HTTPS with a kubernetes client `Configuration`'s host,
    CA, client certificate and bearer token (re-read on each review: a pod's projected
    token is rotated)."""

    def __init__(self, configuration: Any, timeout_s: float) -> None:
        self.configuration = configuration
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
        if not configuration.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        self.client = httpx.AsyncClient(
            base_url=configuration.host, verify=context, timeout=timeout_s
        )

    def _authorization(self) -> str | None:
        hook = getattr(self.configuration, "refresh_api_key_hook", None)
        if hook is not None:
            hook(self.configuration)
        value = self.configuration.get_api_key_with_prefix("authorization")
        return str(value) if value else None

    async def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        authorization = self._authorization()
        if authorization:
            headers["authorization"] = authorization
        try:
            response = await self.client.post(
                REVIEW_PATH, json=review_body(token, audiences), headers=headers
            )
        except httpx.HTTPError as exc:
            raise ReviewFailed(f"TokenReview: {type(exc).__name__}: {exc}") from None
        if response.status_code not in (200, 201):
            raise ReviewFailed(
                f"TokenReview: the API server answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        doc: dict[str, Any] = response.json()
        return doc

    async def close(self) -> None:
        await self.client.aclose()


class VerifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reviews = Counter(
            "loopline_caller_token_reviews_total",
            "TokenReviews of callers' bearer tokens by outcome: verified, invalid (counted as "
            "caller `unauthenticated`), failed (API server unreachable, slow or refusing).",
            ["outcome"],
            registry=registry,
        )
        self.unverified = Counter(
            "loopline_caller_unverified_requests_total",
            "Requests with a bearer token counted by their Loopline-Caller header instead, by "
            "reason: failed (no verdict), waiting (the review outlasted the wait bound), busy "
            "(too many reviews in flight).",
            ["reason"],
            registry=registry,
        )


_lock = threading.Lock()
_metrics: weakref.WeakKeyDictionary[CollectorRegistry, VerifierMetrics] = (
    weakref.WeakKeyDictionary()
)


def verifier_metrics(registry: CollectorRegistry | None = None) -> VerifierMetrics:
    registry = REGISTRY if registry is None else registry
    with _lock:
        found = _metrics.get(registry)
        if found is None:
            found = _metrics[registry] = VerifierMetrics(registry)
        return found


class CallerVerifier:
    """Bearer token -> verified subject (a username, or `callers.INVALID_TOKEN`), or None
    when the header decides (no token, or no verdict in time)."""

    def __init__(
        self,
        reviewer: Reviewer | None,
        cache: VerdictCache,
        *,
        audiences: Sequence[str] = (),
        wait_s: float = 0.25,
        metrics: VerifierMetrics | None = None,
        unavailable: str = "",
    ) -> None:
        self.reviewer = reviewer
        self.cache = cache
        self.audiences = tuple(audiences)
        self.wait_s = wait_s
        self.metrics = metrics or verifier_metrics()
        self.unavailable = unavailable  # why there is no reviewer (no Kubernetes config)
        self._in_flight: dict[bytes, asyncio.Task[Verdict]] = {}
        self._down_until = 0.0

    async def subject(self, authorization: str | None) -> str | None:
        token = bearer_token(authorization)
        if token is None:
            return None
        key = token_key(token)
        verdict = self.cache.get(key)
        if verdict is None:
            verdict = await self._verdict(key, token)
        if verdict is None or verdict.outcome is Outcome.FAILED:
            if verdict is not None:
                self.metrics.unverified.labels("failed").inc()
            return None
        return verdict.username if verdict.outcome is Outcome.VERIFIED else INVALID_TOKEN

    async def _verdict(self, key: bytes, token: str) -> Verdict | None:
        task = self._in_flight.get(key)
        if task is None:
            if self.reviewer is None or time.monotonic() < self._down_until:
                return Verdict(Outcome.FAILED, reason=self.unavailable or "API server down")
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                self.metrics.unverified.labels("busy").inc()
                return None
            task = asyncio.get_running_loop().create_task(self._review(key, token))
            self._in_flight[key] = task
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.wait_s)
        except TimeoutError:
            self.metrics.unverified.labels("waiting").inc()
            return None

    async def _review(self, key: bytes, token: str) -> Verdict:
        assert self.reviewer is not None
        try:
            doc = await self.reviewer.review(token, self.audiences)
            verdict = verdict_of(doc, self.audiences)
        except ReviewFailed as exc:
            verdict = Verdict(Outcome.FAILED, reason=str(exc))
        except Exception as exc:  # a bug must not fail the request
            log.exception("TokenReview failed")
            verdict = Verdict(Outcome.FAILED, reason=f"{type(exc).__name__}: {exc}")
        finally:
            self._in_flight.pop(key, None)
        if verdict.outcome is Outcome.FAILED:
            self._down_until = time.monotonic() + self.cache.ttl[Outcome.FAILED]
            log.warning("caller token not verified (%s); counting by header", verdict.reason)
        self.metrics.reviews.labels(verdict.outcome.value).inc()
        self.cache.put(key, verdict)
        return verdict

    async def close(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        close = getattr(self.reviewer, "close", None)
        if close is not None:
            await close()


def refusal_of(authorization: str | None, subject: str | None) -> str | None:
    """Why `require_caller_token` refuses a request (None: it passes): no bearer token, or
    one the API server refused. One it could not verify passes: an API server that is down
    must not stop inference."""
    if subject == INVALID_TOKEN or bearer_token(authorization) is None:
        return token_required(subject)
    return None


_verifiers: dict[tuple[Any, ...], CallerVerifier | None] = {}
_verifiers_lock = threading.Lock()  # not `_lock`: building a verifier takes that one


def caller_verifier(settings: ServingSettings) -> CallerVerifier | None:
    """The process's verifier for these settings (several models and reloads share one
    cache); None when `caller_token_review` is off. Without a usable Kubernetes
    configuration every token is counted by its header, and the metrics say so."""
    key = (
        settings.caller_token_review,
        settings.caller_kubeconfig,
        tuple(settings.caller_token_audiences),
        settings.caller_cache_ttl_s,
        settings.caller_invalid_ttl_s,
        settings.caller_failure_ttl_s,
        settings.caller_cache_size,
        settings.caller_verify_wait_s,
        settings.caller_review_timeout_s,
    )
    with _verifiers_lock:
        if key in _verifiers:
            return _verifiers[key]
        verifier = _verifiers[key] = _build(settings) if settings.caller_token_review else None
        return verifier


def _build(settings: ServingSettings) -> CallerVerifier:
    from loopline.kube import client_configuration

    reviewer: Reviewer | None = None
    unavailable = ""
    try:
        configuration = client_configuration(settings.caller_kubeconfig or None)
        reviewer = KubeTokenReviewer(configuration, settings.caller_review_timeout_s)
    except Exception as exc:  # no kubeconfig and not in a pod: local development
        unavailable = f"no Kubernetes configuration to verify tokens with ({exc})"
        log.warning("callers' bearer tokens cannot be verified: %s", unavailable)
    cache = VerdictCache(
        ttl_s=settings.caller_cache_ttl_s,
        invalid_ttl_s=settings.caller_invalid_ttl_s,
        failure_ttl_s=settings.caller_failure_ttl_s,
        max_entries=settings.caller_cache_size,
    )
    return CallerVerifier(
        reviewer,
        cache,
        audiences=settings.caller_token_audiences,
        wait_s=settings.caller_verify_wait_s,
        unavailable=unavailable,
    )
