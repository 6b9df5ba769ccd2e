"""kopf handlers: thin adapters from watch events and timers to `runtime.Operator`.

Reconciliation is level-based: every Model and Pipeline has a timer that compares desired with
actual every `LOOPLINE_OPERATOR_RECONCILE_INTERVAL` seconds, and any watch event (create,
spec change, annotation, someone else's status write) reconciles at once. Neither reconciles
in the handler: both put the object's key on the work queue (operators/workqueue.py), whose
threads call the same idempotent function, which re-reads the object under a per-object lock.
Events go before the periodic pass, so one Model changed among hundreds does not wait for
the rest. Every body a handler sees also feeds the operator's object cache
(operators/cache.py), so the reconcile reads the watch's copy instead of GETting it again.

kopf keeps its own bookkeeping (the deletion handler's progress) in annotations under
`kopf.loopline.dev/`, never in `status`, so `status` has one owner and is the API. It keeps no
last-handled configuration (`NoDiffBase`): no handler here asks kopf what changed (the
reconcile compares desired with actual itself), and storing it cost a write of the whole object
after every change, whose watch event then reconciled the object once more. The finalizer `loopline.dev/cleanup` exists because deleting a Model has effects outside the
cluster (model server processes, runs); its cleanup retries with backoff a bounded number of
times, then posts a `CleanupAbandoned` Event and lets the deletion finish.

The handlers are registered in an explicit `kopf.OperatorRegistry` built by `build_registry`
when the operator starts (`loopline operator run`), so the reconcile interval and every other
setting are read then, not frozen when this module is first imported.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import kopf

from loopline import kube, quiet
from loopline.operators.errors import BackendUnavailable
from loopline.operators.kube import api_client
from loopline.operators.runtime import Operator, build_backends
from loopline.operators.settings import OperatorSettings
from loopline.operators.workqueue import Key, Priority, Retry, WorkQueue
from loopline.settings import Settings
from loopline.types.common import GROUP, VERSION

FINALIZER = f"{GROUP}/cleanup"
KOPF_PREFIX = f"kopf.{GROUP}"


class NoDiffBase(kopf.DiffBaseStorage):
    """A last-handled configuration that is never stored: kopf then sees every event of a
    live object as a creation with no creation handler, and writes nothing for it."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


class RoutineSuccess(logging.Filter):
    """Drops kopf's line for every routine handler call that succeeded (a watch event or a
    timer tick only queues a key): at hundreds of Models that was most of the log."""

    QUEUEING = ("model_event", "model_timer", "pipeline_event", "pipeline_timer")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.levelno <= logging.INFO
            and message.endswith(" succeeded.")
            and any(f"'{name}'" in message for name in self.QUEUEING)
        )


def _backoff(retry: int) -> float:
    return float(min(60, 2 ** min(retry, 6)))


def login(settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in with LOOPLINE_OPERATOR_KUBECONFIG when set, else kopf's default (in-cluster,
    then $KUBECONFIG / ~/.kube/config)."""
    kubeconfig = OperatorSettings().kubeconfig
    if kubeconfig is None:
        return kopf.login_via_client(settings=settings, **kwargs)
    config = kube.client_configuration(kubeconfig)
    header = config.get_api_key_with_prefix("authorization") or ""
    scheme, _, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        trust_env=settings.networking.trust_env,
    )


def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    quiet.apply()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RoutineSuccess) for f in objects.filters):
        objects.addFilter(RoutineSuccess())
    settings.posting.level = logging.WARNING  # our own Events say what happened
    # Survive an API server restart: short timeouts so dead watch streams are noticed.
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    # Only deletions run in kopf's executor; reconciles run in the work queue's threads.
    settings.execution.max_workers = 4
    # The CRDs are installed before the operator starts; without scanning kopf needs no access
    # to CustomResourceDefinitions or Namespaces (least privilege, manifests/rbac/).
    settings.scanning.disabled = True
    ours = OperatorSettings()
    backends = build_backends(ours, Settings().resolved_mlflow_tracking_uri())
    operator = Operator(api_client(ours), backends, ours)
    operator.cache.watched("models", "pipelines")  # kopf's watches feed it from here on
    queue = WorkQueue(partial(reconcile, operator), ours.reconcile_workers, _backoff)
    memo["operator"], memo["queue"] = operator, queue
    queue.start()
    if ours.metrics_port:
        memo["metrics"] = serve_metrics(ours, operator)


def serve_metrics(settings: OperatorSettings, operator: Operator) -> Any:
    """The operator's /metrics: the scheduled batch runs' usage series of the Models its
    cache holds (operators/batch_metrics.py). Returns the HTTP server, for cleanup."""
    from prometheus_client import start_http_server

    from loopline.operators.batch_metrics import batch_usage_registry

    registry = batch_usage_registry(lambda: operator.cache.held("models"))
    server, _ = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=registry
    )
    return server


def cleanup(memo: kopf.Memo, **_: Any) -> None:
    metrics = memo.get("metrics")
    if metrics is not None:
        metrics.shutdown()
        metrics.server_close()
    queue = memo.get("queue")
    if queue is not None:
        queue.stop()
    operator = memo.get("operator")
    if operator is not None:
        operator.close()


def _operator(memo: Any) -> Operator:
    operator: Operator = memo["operator"]
    return operator


def _queue(memo: Any) -> WorkQueue:
    queue: WorkQueue = memo["queue"]
    return queue


def reconcile(operator: Operator, key: Key) -> None:
    """One reconcile of a queued key; a backend that is down is retried after a backoff
    (the Model shows Degraded meanwhile)."""
    plural, namespace, name = key
    try:
        if plural == "models":
            operator.reconcile_model(namespace, name)
        else:
            operator.reconcile_pipeline(namespace, name)
    except BackendUnavailable as exc:
        raise Retry(str(exc)) from exc


def _enqueue(plural: str, type_: str | None, body: Any, memo: Any, priority: Priority) -> None:
    meta = body.get("metadata") or {}
    namespace, name = meta.get("namespace"), meta.get("name")
    operator = _operator(memo)
    operator.cache.observe(plural, body, deleted=type_ == "DELETED")
    if type_ == "DELETED" or namespace is None or name is None:
        return
    key = (plural, namespace, name)
    if type_ is not None and operator.wrote(key, meta.get("resourceVersion")):
        return  # the operator's own status write coming back: nothing new to act on
    _queue(memo).add(key, priority)


async def model_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    _enqueue("models", type, body, memo, Priority.EVENT)


async def model_timer(body: kopf.Body, memo: Any, **_: Any) -> None:
    _enqueue("models", None, body, memo, Priority.RESYNC)


def model_delete(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    try:
        _operator(memo).cleanup_model(dict(body), retry)
    except BackendUnavailable as exc:
        raise kopf.TemporaryError(str(exc), delay=_backoff(retry)) from exc


async def pipeline_event(type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    _enqueue("pipelines", type, body, memo, Priority.EVENT)


async def pipeline_timer(body: kopf.Body, memo: Any, **_: Any) -> None:
    _enqueue("pipelines", None, body, memo, Priority.RESYNC)


def build_registry(settings: OperatorSettings | None = None) -> kopf.OperatorRegistry:
    """The operator's handlers, with the timers' interval read from `settings` now."""
    interval = (settings or OperatorSettings()).reconcile_interval
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)
    kopf.on.startup(registry=registry)(startup)
    kopf.on.cleanup(registry=registry)(cleanup)
    kopf.on.event(GROUP, VERSION, "models", registry=registry)(model_event)
    kopf.timer(GROUP, VERSION, "models", interval=interval, registry=registry)(model_timer)
    kopf.on.delete(GROUP, VERSION, "models", registry=registry)(model_delete)
    kopf.on.event(GROUP, VERSION, "pipelines", registry=registry)(pipeline_event)
    kopf.timer(GROUP, VERSION, "pipelines", interval=interval, registry=registry)(pipeline_timer)
    return registry
