"""Which drift monitor a Model should have: pure data built from its spec and champion."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loopline.types.model import ModelSpec


@dataclass(frozen=True)
class DriftCheck:
    """What the Model's drift monitor last reported.

    `confirmed` and `settled` carry the monitor's hysteresis to the `Drifted` condition: one
    window that drifts (or not) is noise in either direction, K in a row is a change (the
    monitor's `consecutiveWindows`)."""

    last_check: datetime  # end of the last tested window
    features: list[str] = field(default_factory=list)  # drifted in that window
    p_values: dict[str, float] = field(default_factory=dict)
    confirmed: bool = False  # K windows in a row drifted (and no stable one since)
    settled: bool = False  # K windows in a row tested stable


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


def monitor_settings(
    desired: MonitorDesired,
    *,
    host: str,
    port: int,
    kubeconfig: str,
    tracking_uri: str,
    state_dir: str,
) -> dict[str, str]:
    """The monitor's `LOOPLINE_MONITOR_*` variables: one definition for a local process and a
    pod, so a Model's monitor decides alike wherever it runs."""
    window = desired.window_size
    settings = {
        "MODEL": desired.name,
        "NAMESPACE": desired.namespace,
        "HOST": host,
        "PORT": str(port),
        "DETECTOR": desired.detector,
        "P_VALUE": str(desired.p_value),
        "WINDOW_SIZE": str(window),
        "MIN_FEATURE_ROWS": str(min(20, window)),
        "COOLDOWN_SECONDS": str(desired.cooldown_seconds),
        "RETRAIN_ON_DRIFT": str(desired.retrain_on_drift).lower(),
        "REQUESTER": "kubernetes",
        "KUBECONFIG": kubeconfig,
        "TRACKING_URI": tracking_uri,
        "STATE_DIR": state_dir,
    }
    return {f"LOOPLINE_MONITOR_{key}": value for key, value in settings.items()}
