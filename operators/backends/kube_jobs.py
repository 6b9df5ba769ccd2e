"""The `kubernetes` pipeline backend: one Job per training run, for clusters without Kubeflow.

The Job (`operators.builders.kube_jobs`, which says how the spec, the result and the Feast
repository travel) runs the training image's `python -m loopline.pipelines.run`, the local
worker's runner, with kfp.local inside the pod. Everything the backend knows is on the
cluster, so a restarted operator loses nothing:

- `submit` creates the Job named after the run id; if one exists (an operator restarted, or
  two reconciles raced), it adopts it: the API server's name uniqueness is what makes a run
  id one Job. An existing Job is never changed (its pod template is immutable anyway).
- `status` reads the Job and its pod: pending reasons (an image that cannot be pulled, a
  missing claim) as a Pending result with what to fix, the termination message's result once
  the pod ends, a deadline or an out-of-memory kill as a failure. A Job that is gone is None.
- `cancel` deletes the Job in the foreground: it stays, read as Cancelled, until its pod is
  gone, and the pod gets SIGTERM (the runner records Cancelled and stops its steps).
- `runs_of` lists a Model's Jobs by label.

Calls take only a run id, so the backend remembers which namespace each run it saw is in; a
run id it has not seen (after a restart) is looked up by label in the watched namespaces, or
across the cluster when the operator watches all of them.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline.operators.backends.kube_objects import KubeObjects, api_error
from loopline.operators.builders.auth import MODEL_LABEL
from loopline.operators.builders.kube_job_results import run_result
from loopline.operators.builders.kube_jobs import (
    COMPONENT_LABEL,
    JobConfig,
    build_training_job,
    component_of,
    model_selector,
    run_selector,
)
from loopline.operators.errors import BackendRejected
from loopline.operators.kube import api_client
from loopline.operators.settings import OperatorSettings
from loopline.types.batch import RunSpec
from loopline.types.runs import TrainingRunResult

# The defaults of the settings feature_repo_claim (the claim in each Model's namespace holding
# the Feast repository: builders.kube_jobs.FEATURE_REPO_MOUNT) and training_env_secret (keys
# become the pod's environment: the Feast stores' credentials, FEAST_PG_*, FEAST_REDIS_*,
# feature_store.yaml's ${VAR}s; MLflow's, MLFLOW_TRACKING_*; an object store's, AWS_*).
FEATURE_REPO_CLAIM = OperatorSettings.model_fields["feature_repo_claim"].default
ENV_SECRET = OperatorSettings.model_fields["training_env_secret"].default

BATCH, JOB, POD = "batch/v1", "Job", "Pod"


class JobPipelineBackend:
    def __init__(
        self,
        settings: OperatorSettings,
        *,
        tracking_uri: str = "",
        api: k8s.ApiClient | None = None,
    ) -> None:
        if not settings.training_image:
            raise ValueError(
                "LOOPLINE_OPERATOR_TRAINING_IMAGE is empty: set the Loopline training image "
                "(repository:tag) that training Jobs run (pipeline backend kubernetes)"
            )
        uri = settings.cluster_tracking_uri or tracking_uri
        if not uri:
            raise ValueError(
                "no MLflow tracking URI for training pods: set "
                "LOOPLINE_OPERATOR_CLUSTER_TRACKING_URI (pipeline backend kubernetes)"
            )
        self.config = JobConfig(
            image=settings.training_image,
            batch_image=settings.runtime_image or None,
            tracking_uri=uri,
            image_pull_policy=settings.image_pull_policy,
            feature_claim=settings.feature_repo_claim or None,
            env_secret=settings.training_env_secret or None,
            deadline_seconds=settings.training_deadline_seconds,
        )
        self.namespaces = list(settings.namespaces)
        self.api = api or api_client(settings)
        self.objects = KubeObjects(self.api)
        self.batch = k8s.BatchV1Api(self.api)
        self._where: dict[str, str] = {}  # run id -> namespace
        self._lock = threading.Lock()

    def _remember(self, run_id: str, namespace: str) -> None:
        with self._lock:
            self._where[run_id] = namespace

    def submit(self, spec: RunSpec) -> str:
        try:
            job = build_training_job(spec, self.config)
        except ValueError as exc:
            raise BackendRejected(f"training Job for run {spec.run_id}: {exc}") from exc
        existing = self.objects.get(BATCH, JOB, spec.namespace, spec.run_id)
        if existing is None:
            try:
                self.batch.create_namespaced_job(spec.namespace, job)
            except ApiException as exc:
                if exc.status != 409:
                    raise self._create_error(spec, exc) from exc
                existing = self.objects.get(BATCH, JOB, spec.namespace, spec.run_id)
        if existing is not None:
            self._check_ours(existing, spec)
        self._remember(spec.run_id, spec.namespace)
        return spec.run_id

    @staticmethod
    def _create_error(spec: RunSpec, exc: ApiException) -> Exception:
        what = f"create training Job {spec.namespace}/{spec.run_id}"
        error = api_error(what, exc)
        if exc.status in (400, 422):  # the API server refuses this Job whatever we retry
            return BackendRejected(str(error))
        return error

    @staticmethod
    def _check_ours(job: dict[str, Any], spec: RunSpec) -> None:
        labels = (job.get("metadata") or {}).get("labels") or {}
        component = component_of(spec)
        if labels.get(COMPONENT_LABEL) != component or labels.get(MODEL_LABEL) != spec.model_name:
            raise BackendRejected(
                f"a Job named {spec.run_id} exists in namespace {spec.namespace} and is not "
                f"a {component} run of Model {spec.model_name}: delete or rename it"
            )

    def _namespace_of(self, run_id: str) -> str | None:
        with self._lock:
            known = self._where.get(run_id)
        if known is not None:
            return known
        for job in self._find(run_id):
            namespace = str(job["metadata"]["namespace"])
            self._remember(run_id, namespace)
            return namespace
        return None

    def _find(self, run_id: str) -> list[dict[str, Any]]:
        selector = run_selector(run_id)
        if self.namespaces:
            found = []
            for namespace in self.namespaces:
                found += self.objects.list(BATCH, JOB, namespace, selector)
            return found
        try:
            jobs = self.batch.list_job_for_all_namespaces(label_selector=selector)
        except ApiException as exc:
            raise api_error(f"list training Jobs ({selector})", exc) from exc
        return list(self.api.sanitize_for_serialization(jobs).get("items") or [])

    def status(self, run_id: str) -> TrainingRunResult | None:
        namespace = self._namespace_of(run_id)
        if namespace is None:
            return None
        job = self.objects.get(BATCH, JOB, namespace, run_id)
        if job is None:
            with self._lock:
                self._where.pop(run_id, None)
            return None
        pods = self.objects.list("v1", POD, namespace, run_selector(run_id))
        return run_result(job, pods)

    def cancel(self, run_id: str) -> None:
        namespace = self._namespace_of(run_id)
        if namespace is None:
            return
        self.objects.delete(BATCH, JOB, namespace, run_id, propagation="Foreground")

    def runs_of(self, namespace: str, model: str) -> list[str]:
        jobs = self.objects.list(BATCH, JOB, namespace, model_selector(model))
        names = sorted(str(job["metadata"]["name"]) for job in jobs)
        for name in names:
            self._remember(name, namespace)
        return names
