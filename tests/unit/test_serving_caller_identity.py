"""Callers' bearer tokens: the verdict of a TokenReview, its cache, and the verifier's bounds.

The verifier's tests drive it with a scripted reviewer (an answer, a hang, an error on
demand), because what they check is timing and concurrency no real API server can be made
to show on cue; tests/integration/test_caller_tokens.py runs it against a real one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from loopline.serving.caller_identity import (
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
from loopline.serving.token_review import (
    CallerVerifier,
    ReviewFailed,
    refusal_of,
    verifier_metrics,
)

SA = "system:serviceaccount:plant:historian"


def authenticated(username: str, audiences: Sequence[str] = ()) -> dict[str, Any]:
    status: dict[str, Any] = {"authenticated": True, "user": {"username": username}}
    if audiences:
        status["audiences"] = list(audiences)
    return {"kind": "TokenReview", "status": status}


def test_bearer_token_reads_only_the_bearer_scheme() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic dXNlcjpwdw==") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_the_cache_key_is_a_hash_not_the_token() -> None:
    key = token_key("secret-token")
    assert b"secret-token" not in key
    assert len(key) == 32
    assert key == token_key("secret-token") != token_key("other-token")


def test_review_body_asks_for_audiences_only_when_configured() -> None:
    assert review_body("t", ())["spec"] == {"token": "t"}
    body = review_body("t", ["loopline"])
    assert body["apiVersion"] == "authentication.k8s.io/v1"
    assert body["kind"] == "TokenReview"
    assert body["spec"] == {"token": "t", "audiences": ["loopline"]}


def test_verdict_of_a_review() -> None:
    assert verdict_of(authenticated(SA)) == Verdict(Outcome.VERIFIED, username=SA)
    refused = verdict_of({"status": {"authenticated": False, "error": "token expired"}})
    assert refused.outcome is Outcome.INVALID
    assert "expired" in refused.reason
    assert verdict_of({"status": {}}).outcome is Outcome.INVALID
    assert verdict_of({"status": {"authenticated": True, "user": {}}}).outcome is Outcome.INVALID
    assert verdict_of({"kind": "Status"}).outcome is Outcome.FAILED


def test_asked_audiences_must_be_granted() -> None:
    assert verdict_of(authenticated(SA, ["loopline"]), ["loopline"]).outcome is Outcome.VERIFIED
    wrong = verdict_of(authenticated(SA, ["vault"]), ["loopline"])
    assert wrong.outcome is Outcome.INVALID
    assert "vault" in wrong.reason
    assert verdict_of(authenticated(SA), ["loopline"]).outcome is Outcome.INVALID


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_keeps_each_outcome_for_its_own_time() -> None:
    clock = Clock()
    cache = VerdictCache(ttl_s=300, invalid_ttl_s=30, failure_ttl_s=5, max_entries=10, clock=clock)
    cache.put(b"ok", Verdict(Outcome.VERIFIED, SA))
    cache.put(b"bad", Verdict(Outcome.INVALID))
    cache.put(b"down", Verdict(Outcome.FAILED))
    clock.now = 4.9
    assert cache.get(b"down") is not None
    clock.now = 5.0
    assert cache.get(b"down") is None
    assert cache.get(b"bad") is not None
    clock.now = 30.0
    assert cache.get(b"bad") is None
    assert cache.get(b"ok") == Verdict(Outcome.VERIFIED, SA)
    clock.now = 300.0
    assert cache.get(b"ok") is None
    assert len(cache) == 0


def test_cache_is_bounded_and_forgets_the_oldest() -> None:
    cache = VerdictCache(ttl_s=60, invalid_ttl_s=60, failure_ttl_s=60, max_entries=3)
    for i in range(5):
        cache.put(bytes([i]), Verdict(Outcome.VERIFIED, f"u{i}"))
    assert len(cache) == 3
    assert cache.get(bytes([0])) is None
    assert cache.get(bytes([1])) is None
    assert cache.get(bytes([4])) == Verdict(Outcome.VERIFIED, "u4")
    with pytest.raises(ValueError, match="max_entries"):
        VerdictCache(ttl_s=1, invalid_ttl_s=1, failure_ttl_s=1, max_entries=0)


class ScriptedReviewer:
    """Answers from `answers` by token; `hang` blocks until released; `fail` raises."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.hang = asyncio.Event()
        self.hang.set()
        self.fail = False

    async def review(self, token: str, audiences: Sequence[str]) -> dict[str, Any]:
        self.calls.append(token)
        await self.hang.wait()
        if self.fail:
            raise ReviewFailed("connection refused")
        return self.answers.get(token, {"status": {"authenticated": False}})


def verifier(
    reviewer: ScriptedReviewer | None, wait_s: float = 0.05
) -> tuple[CallerVerifier, CollectorRegistry]:
    registry = CollectorRegistry()
    cache = VerdictCache(ttl_s=60, invalid_ttl_s=60, failure_ttl_s=0.3, max_entries=100)
    return CallerVerifier(
        reviewer, cache, wait_s=wait_s, metrics=verifier_metrics(registry)
    ), registry


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_verified_invalid_and_no_token() -> None:
    async def scenario() -> None:
        reviewer = ScriptedReviewer({"good": authenticated(SA)})
        v, registry = verifier(reviewer)
        assert await v.subject("Bearer good") == SA
        assert await v.subject("Bearer good") == SA  # cached: one review
        assert await v.subject("Bearer forged") == INVALID_TOKEN
        assert await v.subject(None) is None
        assert reviewer.calls == ["good", "forged"]
        reviews = "loopline_caller_token_reviews_total"
        assert count(registry, reviews, outcome="verified") == 1
        assert count(registry, reviews, outcome="invalid") == 1

    asyncio.run(scenario())


def test_a_hung_api_server_costs_a_request_only_the_wait_bound() -> None:
    async def scenario() -> None:
        reviewer = ScriptedReviewer({"good": authenticated(SA)})
        reviewer.hang.clear()
        v, registry = verifier(reviewer, wait_s=0.05)
        began = time.monotonic()
        results = await asyncio.gather(*(v.subject("Bearer good") for _ in range(20)))
        assert time.monotonic() - began < 1.0  # bounded by wait_s, not by the review
        assert results == [None] * 20  # counted by the header meanwhile
        assert reviewer.calls == ["good"]  # one review in flight for the token
        name = "loopline_caller_unverified_requests_total"
        assert count(registry, name, reason="waiting") == 20
        reviewer.hang.set()  # the review finishes in the background and fills the cache
        await asyncio.sleep(0.01)
        assert await v.subject("Bearer good") == SA
        assert reviewer.calls == ["good"]

    asyncio.run(scenario())


def test_a_failed_review_falls_back_and_pauses_reviews() -> None:
    async def scenario() -> None:
        reviewer = ScriptedReviewer({"good": authenticated(SA), "other": authenticated(SA)})
        reviewer.fail = True
        v, registry = verifier(reviewer)
        assert await v.subject("Bearer good") is None
        assert await v.subject("Bearer other") is None  # API server held down: no review
        assert reviewer.calls == ["good"]
        assert count(registry, "loopline_caller_token_reviews_total", outcome="failed") == 1
        name = "loopline_caller_unverified_requests_total"
        assert count(registry, name, reason="failed") == 2
        reviewer.fail = False
        await asyncio.sleep(0.35)  # failure_ttl_s: reviews resume
        assert await v.subject("Bearer other") == SA

    asyncio.run(scenario())


def test_without_a_kubernetes_configuration_every_token_is_unverified() -> None:
    async def scenario() -> None:
        v, registry = verifier(None)
        assert await v.subject("Bearer good") is None
        name = "loopline_caller_unverified_requests_total"
        assert count(registry, name, reason="failed") == 1

    asyncio.run(scenario())


def test_require_caller_token_refuses_missing_and_refused_tokens_only() -> None:
    assert refusal_of(None, None) == token_required(None)
    assert refusal_of("Basic x", None) == token_required(None)
    assert refusal_of("Bearer t", INVALID_TOKEN) == token_required(INVALID_TOKEN)
    assert refusal_of("Bearer t", SA) is None
    assert refusal_of("Bearer t", None) is None  # unverifiable: the API server is down
    assert "Authorization: Bearer" in token_required(None)


def test_caller_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_SERVING_REQUIRE_CALLER_TOKEN", "true")
    monkeypatch.setenv("LOOPLINE_SERVING_CALLER_TOKEN_AUDIENCES", '["loopline"]')
    monkeypatch.setenv("LOOPLINE_SERVING_CALLER_KUBECONFIG", "/etc/kube/config")
    settings = ServingSettings()
    assert settings.require_caller_token is True
    assert settings.caller_token_audiences == ["loopline"]
    assert settings.caller_kubeconfig == "/etc/kube/config"
    assert ServingSettings.from_sources({"caller_verify_wait_s": 0.1}).caller_verify_wait_s == 0.1
