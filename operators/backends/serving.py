"""Serving backends: what makes a Model's champion (and canary) answer requests.

`ServingBackend` is the interface: `apply(desired)` makes the serving match a
`ServingDesired` (idempotent, cheap when nothing changed) and reports a `ServingObserved`;
`observe` reports without changing anything; `delete` removes everything a Model had.

`LocalServingBackend` wraps `loopline.serving.local.LocalServingManager` (one model server process
per Model on loopback ports, hot reload for new versions and canary weights), one manager per
namespace so two namespaces can hold Models with the same name.

Ready means the model answers ready (`GET /v2/models/{name}/ready`, which covers a canary
too: one runtime holds both versions), not only that the process lives. The manager's
supervisor notices a model that stops answering; `observe` reports it (not ready, with the
reason) and the next `apply`, in the same reconcile, reloads it or restarts the process.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from loopline.auth import AuthConfigError, ensure_token_file, model_token_path
from loopline.operators.backends.canary_stats import StepWindows, scrape
from loopline.operators.builders.canary import VersionStats
from loopline.operators.builders.serving import (
    MODEL_NOT_READY,
    SERVER_FAILED,
    SERVER_RESTARTING,
    ServingDesired,
    ServingObserved,
)
from loopline.operators.errors import BackendUnavailable

if TYPE_CHECKING:
    from loopline.serving.local import LocalModelSpec, LocalServingManager, ServerStatus

log = logging.getLogger(__name__)


class ServingBackend(Protocol):
    def apply(self, desired: ServingDesired) -> ServingObserved: ...

    def observe(self, namespace: str, name: str) -> ServingObserved | None: ...

    def delete(self, namespace: str, name: str) -> None: ...

    def forget(self, namespace: str, name: str) -> None:
        """Drop what the Model's serving keeps beyond its deployment (its credentials): called
        when the Model itself is deleted, not when it only scales to zero."""
        ...

    def close(self) -> None: ...


def model_uri(registered_model: str, version: str) -> str:
    return f"models:/{registered_model}/{version}"


@dataclass(frozen=True)
class _Applied:
    desired: ServingDesired
    spec: LocalModelSpec
    token: str  # a rotated token (file deleted) restarts the server


def serving_message(status: ServerStatus) -> tuple[str, str]:
    """(condition reason, message for a user) of a local server's state; the reason is empty
    when it serves. The message says what is wrong, where, and what happens next."""
    log_hint = f" (log: {status.log_path})"
    if status.state == "ready":
        return "", f"model server ready on {status.endpoints.rest}"
    if status.state == "unready":
        return MODEL_NOT_READY, f"{status.last_error}; reloading"
    if status.state == "restarting":
        return SERVER_RESTARTING, f"model server {status.last_error}; restarting{log_hint}"
    if status.state == "failed":
        return SERVER_FAILED, f"model server failed: {status.last_error}{log_hint}"
    detail = f": {status.last_error}" if status.last_error else ""
    return "", f"model server {status.state}{detail}{log_hint}"


class LocalServingBackend:
    """Model server processes on 127.0.0.1, supervised by the operator process."""

    def __init__(
        self,
        root: Path,
        *,
        tracking_uri: str,
        tokens_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.tracking_uri = tracking_uri
        # One token per Model, shared with its drift monitor (loopline.auth.model_token_path).
        self.tokens_dir = tokens_dir or root / ".tokens"
        self._managers: dict[str, LocalServingManager] = {}
        self._applied: dict[str, _Applied] = {}
        self._windows = StepWindows()  # each Model's counters when its canary step began
        self._lock = threading.RLock()

    def _manager(self, namespace: str) -> LocalServingManager:
        from loopline.serving.local import LocalServingManager

        with self._lock:
            if namespace not in self._managers:
                self._managers[namespace] = LocalServingManager(self.root / namespace)
            return self._managers[namespace]

    def _spec(self, desired: ServingDesired) -> LocalModelSpec:
        from loopline.serving.async_local import local_async_env
        from loopline.serving.local import LocalModelSpec

        canary = desired.canary_version
        return LocalModelSpec(
            name=desired.name,
            model_name=desired.name,
            model_uri=model_uri(desired.registered_model, desired.champion_version),
            canary_model_uri=model_uri(desired.registered_model, canary) if canary else "",
            canary_weight=desired.canary_weight / 100 if canary else 0.0,
            tracking_uri=self.tracking_uri,
            monitor_url=desired.monitor_url,
            fallback_on_missing_sensors=desired.fallback_on_missing_sensors,
            token_file=str(model_token_path(self.tokens_dir, desired.namespace, desired.name)),
            extra_env=local_async_env(self.root),
        )

    def apply(self, desired: ServingDesired) -> ServingObserved:
        from loopline.serving.local import LocalServingError

        spec = self._spec(desired)
        manager = self._manager(desired.namespace)
        with self._lock:
            applied = self._applied.get(desired.key)
            try:
                token = ensure_token_file(Path(spec.token_file))
                if applied is None or desired.name not in manager.names():
                    manager.start(spec, wait=False)
                elif applied.spec != spec or applied.token != token:
                    manager.update(spec, wait=False)  # a reload: it repairs an unready model too
                elif manager.status(desired.name).state == "unready":
                    done = manager.recover(desired.name)
                    log.warning("%s: model was not ready: %s", desired.key, done)
            except (LocalServingError, AuthConfigError, OSError) as exc:
                raise BackendUnavailable(f"local serving: {exc}") from exc
            self._applied[desired.key] = _Applied(desired, spec, token)
        observed = self.observe(desired.namespace, desired.name)
        assert observed is not None
        return observed

    def observe(self, namespace: str, name: str) -> ServingObserved | None:
        key = f"{namespace}/{name}"
        with self._lock:
            applied = self._applied.get(key)
            manager = self._managers.get(namespace)
            if applied is None or manager is None or name not in manager.names():
                return None
            status = manager.status(name)
        desired = applied.desired
        ready = status.state == "ready"
        champion_stats = canary_stats = None
        if ready and desired.canary_version:
            window = self._window(key, desired, status.endpoints.metrics)
            if window is not None:
                champion_stats, canary_stats = window
        reason, message = serving_message(status)
        return ServingObserved(
            ready=ready,
            champion_version=desired.champion_version,
            canary_version=desired.canary_version,
            canary_weight=desired.canary_weight,
            endpoints={"rest": status.endpoints.rest, "grpc": status.endpoints.grpc},
            message=message,
            reason=reason,
            champion_stats=champion_stats,
            canary_stats=canary_stats,
        )

    def _window(
        self, key: str, desired: ServingDesired, metrics_url: str
    ) -> tuple[VersionStats, VersionStats] | None:
        """Champion and canary traffic since the current canary step began (from the
        server's Prometheus metrics), or None when they cannot be read."""
        assert desired.canary_version is not None
        return self._windows.window(
            key,
            (desired.canary_version, desired.canary_weight),
            scrape({"local": metrics_url}),
            model=desired.name,
            champion_version=desired.champion_version,
            canary_version=desired.canary_version,
        )

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            self._applied.pop(f"{namespace}/{name}", None)
            self._windows.forget(f"{namespace}/{name}")
            manager = self._managers.get(namespace)
        if manager is not None:
            manager.stop(name)

    def forget(self, namespace: str, name: str) -> None:
        model_token_path(self.tokens_dir, namespace, name).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            managers = list(self._managers.values())
            self._managers.clear()
            self._applied.clear()
        for manager in managers:
            manager.close()
