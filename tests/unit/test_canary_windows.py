"""Canary step windows over several model servers (pods): counters summed per version, each
server differenced against its own counters at the step's start."""

from __future__ import annotations

from loopline.operators.backends.canary_stats import StepWindows, total
from loopline.operators.builders.canary import VersionStats


def _metrics(champion: int, canary: int, canary_errors: int = 0) -> str:
    lines = ["# TYPE loopline_inference_requests_total counter"]
    for version, ok, bad in (("1", champion, 0), ("2", canary - canary_errors, canary_errors)):
        for outcome, n in (("ok", ok), ("server_error", bad)):
            lines.append(
                f'loopline_inference_requests_total{{model="m",version="{version}",'
                f'outcome="{outcome}"}} {n}'
            )
    return "\n".join(lines) + "\n"


def _window(
    w: StepWindows, step: tuple[str, int], texts: dict[str, str]
) -> tuple[VersionStats, VersionStats] | None:
    return w.window("ns/m", step, texts, model="m", champion_version="1", canary_version="2")


def test_a_new_step_starts_at_zero_and_counts_only_its_own_traffic() -> None:
    w = StepWindows()
    first = _window(w, ("2", 10), {"a": _metrics(100, 10), "b": _metrics(50, 5)})
    assert first == (VersionStats(), VersionStats())
    champion, canary = _window(w, ("2", 10), {"a": _metrics(130, 14, 1), "b": _metrics(60, 6)})
    assert (champion.requests, canary.requests, canary.server_errors) == (40, 5, 1)
    # the next step: a new window from the counters it starts with
    assert _window(w, ("2", 50), {"a": _metrics(130, 14, 1)}) == (VersionStats(), VersionStats())


def test_a_server_that_appears_mid_step_counts_whole_and_one_that_goes_drops_out() -> None:
    w = StepWindows()
    _window(w, ("2", 10), {"a": _metrics(100, 10)})
    champion, canary = _window(w, ("2", 10), {"a": _metrics(110, 12), "c": _metrics(7, 3)})
    assert (champion.requests, canary.requests) == (17, 5)
    champion, canary = _window(w, ("2", 10), {"c": _metrics(9, 4)})
    assert (champion.requests, canary.requests) == (9, 4)


def test_no_readable_server_is_no_window_and_forget_restarts() -> None:
    w = StepWindows()
    assert _window(w, ("2", 10), {}) is None
    _window(w, ("2", 10), {"a": _metrics(100, 10)})
    w.forget("ns/m")
    assert _window(w, ("2", 10), {"a": _metrics(200, 20)}) == (VersionStats(), VersionStats())


def test_total_adds_counters_and_latency_buckets() -> None:
    a = VersionStats(requests=3, latency_buckets={0.1: 2.0, float("inf"): 3.0})
    b = VersionStats(requests=2, server_errors=1, latency_buckets={0.1: 1.0, float("inf"): 2.0})
    s = total([a, b])
    assert (s.requests, s.server_errors) == (5, 1)
    assert s.latency_buckets == {0.1: 3.0, float("inf"): 5.0}
