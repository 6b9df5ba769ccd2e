"""What should serve a Model, and what a serving backend reports back.

Pure data: the Model builder decides the champion and canary (version and weight); a serving
backend (`local` processes or Seldon objects) makes it so and reports readiness (of the model
itself, not only of a process: a live server whose model was unloaded answers 503), endpoints
and whether the canary is healthy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loopline.operators.builders.canary import VersionStats
from loopline.types.common import registered_model_name
from loopline.types.model import ModelSpec, ServingResources


@dataclass(frozen=True)
class ServingDesired:
    namespace: str
    name: str
    registered_model: str
    champion_version: str
    canary_version: str | None = None
    canary_weight: int = 0  # percent of traffic to the canary
    replicas: int = 1
    protocol: str = "rest"
    fallback_on_missing_sensors: bool = True
    abort_metric: str = "error_rate"
    abort_threshold: float = 0.05
    # Where the model server sends payload samples: the Model's drift monitor (empty: none).
    # The runtime fills it in from the monitoring backend before it applies the serving.
    monitor_url: str = ""
    # CPU and memory of each model server pod (backends that run pods); None: unset.
    resources: ServingResources | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


# `ServingObserved.reason` values for a deployment that served and stopped: the Model shows
# Degraded (with the backend's message) rather than Rolling out while it is repaired.
MODEL_NOT_READY = "ModelNotReady"  # the process lives, the model does not answer ready
SERVER_RESTARTING = "ServerRestarting"  # the process exited; it is being restarted
SERVER_FAILED = "ServerFailed"
MODEL_FAILED = "ModelFailed"  # the platform gave up loading it (a Seldon Model that failed)
UNHEALTHY = frozenset({MODEL_NOT_READY, SERVER_RESTARTING, SERVER_FAILED, MODEL_FAILED})


@dataclass(frozen=True)
class ServingObserved:
    ready: bool
    champion_version: str | None = None
    canary_version: str | None = None
    canary_weight: int = 0
    endpoints: dict[str, str] = field(default_factory=dict)
    message: str = ""  # for a user: what is wrong, where, and what the operator does about it
    reason: str = ""  # one CamelCase word when not ready (a condition reason), e.g. UNHEALTHY
    # False when the backend sees the canary itself broken (a Seldon Model of the canary
    # version that failed); None when it cannot tell, and traffic decides (`*_stats`).
    canary_healthy: bool | None = None
    canary_reason: str = ""
    # Traffic of each version since the current canary step began, when the backend can read
    # it; the builder then lets `loopline.operators.builders.canary.decide_canary` judge the step.
    champion_stats: VersionStats | None = None
    canary_stats: VersionStats | None = None


def build_serving(
    namespace: str,
    name: str,
    spec: ModelSpec,
    champion: str | None,
    canary: str | None,
    weight: int,
) -> ServingDesired | None:
    """The serving the Model should have now; None before any version exists."""
    if champion is None and canary is None:
        return None
    if champion is None:  # first version: no canary, it takes all traffic
        champion, canary, weight = canary, None, 0
    assert champion is not None
    return ServingDesired(
        namespace=namespace,
        name=name,
        registered_model=registered_model_name(namespace, name),
        champion_version=champion,
        canary_version=canary if weight > 0 else None,
        canary_weight=weight if canary else 0,
        replicas=spec.serving.replicas,
        protocol=spec.serving.protocol.value,
        fallback_on_missing_sensors=spec.serving.fallback_on_missing_sensors,
        abort_metric=spec.serving.canary.abort_metric.value,
        abort_threshold=spec.serving.canary.abort_threshold,
        resources=spec.serving.resources,
    )
