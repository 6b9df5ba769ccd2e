"""The `kfp` pipeline backend: training runs on a Kubeflow Pipelines API server.

Wraps `loopline.pipelines.kfp_backend` (submit the compiled package, read a run's state and its
outcome from MLflow). Submission is idempotent per Loopline run id (the KFP run's display name),
so after an operator restart `status` reports an unknown id as None, the builder submits the
same run id again, and the backend finds and adopts the existing KFP run instead of starting
another. Connection errors and 5xx answers are temporary; 4xx answers are permanent.
"""

from __future__ import annotations

import threading
from typing import Any

from loopline.operators.errors import BackendRejected, BackendUnavailable
from loopline.operators.settings import OperatorSettings
from loopline.types.batch import RunSpec
from loopline.types.runs import TrainingRunResult


def _classified(what: str, exc: Exception) -> Exception:
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 500:
        return BackendRejected(f"KFP refused to {what}: {status} {getattr(exc, 'reason', exc)}")
    return BackendUnavailable(f"KFP API server unreachable while trying to {what}: {exc}")


class KfpPipelineBackend:
    def __init__(self, settings: OperatorSettings, *, tracking_uri: str = "") -> None:
        if not settings.kfp_host:
            raise ValueError(
                "LOOPLINE_OPERATOR_KFP_HOST is empty: set it to the KFP API server URL "
                "(pipeline backend kfp)"
            )
        self.host = settings.kfp_host
        self._client: Any = None
        self._runs: dict[str, tuple[RunSpec, str]] = {}
        self._lock = threading.Lock()

    def _api(self) -> Any:
        from loopline.pipelines.kfp_backend import make_client

        if self._client is None:
            try:
                self._client = make_client(self.host)
            except Exception as exc:
                raise _classified("connect", exc) from exc
        return self._client

    def submit(self, spec: RunSpec) -> str:
        from loopline.pipelines import kfp_backend

        with self._lock:
            if spec.run_id in self._runs:
                return spec.run_id
        try:
            kfp_run_id = kfp_backend.submit(self._api(), spec)
        except (BackendRejected, BackendUnavailable):
            raise
        except Exception as exc:
            raise _classified(f"submit run {spec.run_id}", exc) from exc
        with self._lock:
            self._runs[spec.run_id] = (spec, kfp_run_id)
        return spec.run_id

    def status(self, run_id: str) -> TrainingRunResult | None:
        from loopline.pipelines import kfp_backend

        with self._lock:
            known = self._runs.get(run_id)
        if known is None:
            return None
        spec, kfp_run_id = known
        try:
            return kfp_backend.run_status(self._api(), spec, kfp_run_id)
        except (BackendRejected, BackendUnavailable):
            raise
        except Exception as exc:
            raise _classified(f"read run {run_id}", exc) from exc

    def cancel(self, run_id: str) -> None:
        with self._lock:
            known = self._runs.get(run_id)
        if known is None:
            return
        try:
            self._api().terminate_run(known[1])
        except Exception as exc:
            raise _classified(f"cancel run {run_id}", exc) from exc

    def runs_of(self, namespace: str, model: str) -> list[str]:
        """Runs this operator process submitted or adopted (KFP is not listed here)."""
        with self._lock:
            return [
                run_id
                for run_id, (spec, _) in self._runs.items()
                if spec.namespace == namespace and spec.model_name == model
            ]
