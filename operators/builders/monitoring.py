"""Which drift monitor a Model should have: pure data built from its spec and champion."""

from __future__ import annotations

from dataclasses import dataclass

from loopline.types.model import ModelSpec


@dataclass(frozen=True)
class MonitorDesired:
    namespace: str
    name: str
    # A new champion restarts the local monitor (this field is part of its identity), and the
    # new process loads the alias, which the operator moved just before: no window is tested
    # against the old champion's reference after a promotion.
    champion_version: str
    detector: str
    p_value: float
    window_size: int
    cooldown_seconds: int
    retrain_on_drift: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def build_monitor(
    namespace: str, name: str, spec: ModelSpec, champion: str | None
) -> MonitorDesired | None:
    """A monitor once a champion is served and monitoring is enabled; else none."""
    if champion is None or not spec.monitoring.enabled or spec.serving.replicas == 0:
        return None
    m = spec.monitoring
    return MonitorDesired(
        namespace=namespace,
        name=name,
        champion_version=champion,
        detector=m.detector.value,
        p_value=m.p_value,
        window_size=m.window_size,
        cooldown_seconds=m.cooldown_seconds,
        retrain_on_drift=m.retrain_on_drift,
    )
