"""The demo's stack: the local control plane, MLflow, the plant's history as a Feast
repository, the operator, and the example manifests applied, each logged as a step with the
command that shows the same thing.

`DemoStack` holds the run's state; the acts (`loopline.demo.acts`) and the whole run
(`loopline.demo.scenario`) build on it.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from loopline import kube, quiet, supervisor
from loopline.data.generator import GeneratorConfig, Manifest, generate
from loopline.data.schema import CORE_SENSORS, factory_schema
from loopline.demo.errors import BrokenPiece
from loopline.demo.historian import Historian
from loopline.demo.landing import Landing
from loopline.demo.live import LiveView
from loopline.demo.manifests import EXAMPLES_DIR, demo_model, demo_pipeline, load_examples
from loopline.demo.processes import DemoProcesses
from loopline.demo.record import DemoRecord
from loopline.demo.settings import DemoSettings
from loopline.demo.traffic import Plant, PlantStream
from loopline.demo.watch import ModelWatcher
from loopline.ports import free_port
from loopline.supervisor import ProcessRecord, SupervisorError

OWN_DIRS = (
    "cluster",
    "mlflow",
    "data",
    "feature_repo",
    "operator",
    "manifests",
    "monitor",
    "prometheus",
)


class DemoStack:
    """The run's state and the acts that bring the stack up."""

    def __init__(
        self,
        settings: DemoSettings,
        *,
        keep: bool = False,
        view: LiveView | None = None,
        record: DemoRecord | None = None,
        report: bool = True,
    ) -> None:
        quiet.apply()
        self.s = settings
        self.keep = keep
        self.view = view
        self.write_report = report
        self.state_dir = settings.resolved_state_dir()
        self.record = record or DemoRecord(
            model=settings.model, namespace=settings.namespace, core_features=list(CORE_SENSORS)
        )
        self.record.model = settings.model
        self.record.namespace = settings.namespace
        self.record.core_features = list(CORE_SENSORS)
        self.processes = DemoProcesses(self.state_dir)
        self.tracking_uri = f"sqlite:///{self.state_dir / 'mlflow' / 'mlflow.db'}"
        self.repo_dir = self.state_dir / "feature_repo"
        self.kubeconfig: Path | None = None
        self.kubectl_bin: Path | None = None
        self.api: Any = None
        self.watcher: ModelWatcher | None = None
        self.plant: Plant | None = None
        self.stream: PlantStream | None = None
        self.landing: Landing | None = None
        self.history: Manifest | None = None
        self._landing_stop = False
        self._next_landing = 0.0
        self._mlflow: ProcessRecord | None = None
        self._mlflow_url = ""
        self.historian: Historian | None = None
        self.prometheus_url = ""
        self._fault_injected = False
        self._stale_seen = threading.Event()

    # -- helpers ---------------------------------------------------------------------------

    def kubectl_line(self, *args: str) -> str:
        """The command a person would type (with the demo's KUBECONFIG exported)."""
        return "kubectl " + " ".join(shlex.quote(a) for a in args)

    def kubectl_model(self, *args: str) -> str:
        """The kubectl command that shows the demo's Model (with `args`, e.g. `-o ...`)."""
        return self.kubectl_line(
            "get", "models.loopline.dev", self.s.model, "-n", self.s.namespace, *args
        )

    def on_tick(self) -> None:
        """More periodic work of a stack while traffic flows (the acts call it); none here."""

    def reach_url(self, url: str) -> str:
        """An endpoint of the Model's status as this process reaches it: locally, as is."""
        return url

    def kubectl(self, *args: str, input: str | None = None) -> str:
        if self.kubectl_bin is None or self.kubeconfig is None:
            raise RuntimeError("the cluster is not up")
        from loopline.cluster.kubectl import Kubectl

        return Kubectl(self.kubectl_bin, self.kubeconfig)(*args, input=input).stdout

    def child_env(self) -> dict[str, str]:
        """What every Loopline process the demo starts shares: state, tracking, cluster."""
        env = {
            "LOOPLINE_STATE_DIR": str(self.state_dir),
            "LOOPLINE_MLFLOW_TRACKING_URI": self.tracking_uri,
            "LOOPLINE_OPERATOR_FEATURE_REPO": str(self.repo_dir),
            "LOOPLINE_OPERATOR_NAMESPACES": json.dumps([self.s.namespace]),
            "LOOPLINE_OPERATOR_RECONCILE_INTERVAL": "2",
            "PYTHONUNBUFFERED": "1",
        }
        if self.s.historian_burst > 0:
            # Local mode's Redis for asynchronous inference (docs/serving.md): the model
            # servers the operator starts answer the historian's queued requests.
            env["LOOPLINE_ASYNC_LOCAL"] = "true"
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
            env["LOOPLINE_OPERATOR_KUBECONFIG"] = str(self.kubeconfig)
        return env

    def stop_previous(self) -> None:
        previous = self.processes.load()
        if previous is not None and (previous.processes or previous.cluster_state_dir):
            stopped = self.processes.stop_all()
            if stopped:
                self.record.step(
                    "Stopped a previous demo",
                    detail=", ".join(stopped),
                    command="loopline demo down",
                )
        # A fresh start: an old MLflow store would hand the new Model an old champion.
        for name in OWN_DIRS:
            shutil.rmtree(self.state_dir / name, ignore_errors=True)
        self.processes = DemoProcesses(self.state_dir, demo_id=None)
        self.processes.save()

    def start_cluster(self) -> None:
        from loopline.cluster.manager import LocalCluster
        from loopline.cluster.settings import ClusterSettings

        cluster_dir = self.state_dir / "cluster"
        self.processes.set_cluster(cluster_dir)
        cluster = LocalCluster(ClusterSettings(state_dir=cluster_dir))
        started = time.monotonic()
        state = cluster.up(nodes=1).state
        self.kubeconfig = cluster.kubeconfig_path
        self.kubectl_bin = state.bin_dir / "kubectl"

        self.api = kube.api_client(self.kubeconfig)
        self.record.links["KUBECONFIG"] = str(self.kubeconfig)
        self.record.step(
            "Local control plane up",
            detail=f"{state.server} in {time.monotonic() - started:.0f}s",
            command=f"export KUBECONFIG={self.kubeconfig} PATH={state.bin_dir}:$PATH; "
            "kubectl get --raw /readyz",
        )
        self.kubectl("create", "namespace", self.s.namespace)
        self.record.step(
            "Namespace created",
            detail=self.s.namespace,
            command=self.kubectl_line("get", "namespace", self.s.namespace),
        )

    def start_mlflow(self) -> None:
        """Create the SQLite store here (so no two processes race to migrate it), then start
        MLflow's UI over it without waiting: nothing on the loop's path needs the UI, and on
        a busy machine it takes a minute to come up. `mlflow_ready` waits for it later."""
        from mlflow import MlflowClient

        mlflow_dir = self.state_dir / "mlflow"
        (mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)
        # MLflow logs through a handler of its own; send its records where ours go instead.
        mlflow_log = logging.getLogger("mlflow")
        for handler in list(mlflow_log.handlers):
            mlflow_log.removeHandler(handler)
        mlflow_log.propagate = True
        MlflowClient(tracking_uri=self.tracking_uri).search_experiments(max_results=1)
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.tracking_uri,
            "--default-artifact-root",
            (mlflow_dir / "artifacts").as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        self._mlflow = self.processes.start("mlflow", argv, env=self.child_env(), stop_timeout=3.0)
        self._mlflow_url = f"http://127.0.0.1:{port}"
        self.processes.set_endpoint("mlflow", self._mlflow_url)
        self.record.links["MLflow UI"] = self._mlflow_url
        self.record.step(
            "MLflow UI starting", detail=self._mlflow_url, command=f"open {self._mlflow_url}"
        )

    def mlflow_ready(self, timeout: float = 120.0) -> None:
        """Wait for the MLflow UI (started by `start_mlflow`) to answer /health."""
        if self._mlflow is None:
            return
        url = self._mlflow_url

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            supervisor.wait_until(self._mlflow, healthy, timeout=timeout, what="healthy")
        except SupervisorError as exc:  # the UI is not essential to the loop
            raise BrokenPiece(f"MLflow UI: {exc}") from exc
        self.record.step("MLflow UI up", detail=url, command=f"open {url}/#/models")
        self._mlflow = None

    def prepare_data(self) -> None:
        from loopline.data import features

        s = self.s
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        start = now - timedelta(days=s.history_days)
        config = GeneratorConfig(
            machines=s.machines,
            days=s.history_days,
            interval_seconds=s.interval_seconds,
            start=start,
            seed=s.seed,
            fault_fraction=s.fault_fraction,
            sensor_faults_per_day=0.0,
        )
        frame, manifest = generate(config)
        self.history = manifest
        data_dir = self.state_dir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        source = data_dir / "history.parquet"
        frame.to_parquet(source, index=False)
        features.create_repo(self.repo_dir, source, factory_schema())
        features.apply(self.repo_dir)
        self.landing = Landing(self.repo_dir, frame)
        self.record.step(
            "Plant history generated",
            detail=f"{len(frame)} rows, {s.machines} machines, {s.history_days:g} days; "
            f"Feast repo {self.repo_dir}",
            command=f"feast -c {self.repo_dir} feature-services list",
        )

    def start_operator(self) -> None:
        # kopf serves its liveness probe once its handlers run: that, not a pause, says the
        # operator started (and a crash at start fails the wait at once, with its log).
        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        argv = [sys.executable, "-m", "loopline.cli.main", "operator", "run"]
        record = self.processes.start(
            "operator", [*argv, "--liveness", liveness], env=self.child_env()
        )

        def live() -> bool:
            try:
                return httpx.get(liveness, timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            supervisor.wait_until(record, live, timeout=120.0, what="live")
        except SupervisorError as exc:
            raise BrokenPiece(f"the operator did not start: {exc}") from exc
        self.record.step(
            "Operator running (local backends)",
            detail=f"pid {record.pid}, log {record.log}",
            command=f"tail -f {record.log}",
        )

    def apply_examples(self) -> None:
        model, pipeline = load_examples(EXAMPLES_DIR, self.s.model)
        out = self.state_dir / "manifests"
        out.mkdir(parents=True, exist_ok=True)
        pipeline_file = out / "pipeline.yaml"
        model_file = out / "model.yaml"
        pipeline_file.write_text(yaml.safe_dump(demo_pipeline(pipeline, self.s.namespace)))
        model_file.write_text(
            yaml.safe_dump(demo_model(model, self.s, self.s.namespace), sort_keys=False)
        )
        self.kubectl("apply", "-f", str(pipeline_file))
        self.record.step(
            "Pipeline applied",
            detail=str(pipeline["metadata"]["name"]),
            command=self.kubectl_line("apply", "-f", str(pipeline_file)),
        )
        self.kubectl("apply", "-f", str(model_file))
        self.record.step(
            "Model applied",
            detail=self.s.model,
            command=self.kubectl_model("-w"),
        )
        self.watcher = ModelWatcher(
            self.api, self.s.namespace, self.s.model, self.record, reach=self.reach_url
        ).start()

    def start_prometheus(self) -> None:
        """A Prometheus scraping the model server and the drift monitor every second: the
        source of the report's usage table, as of `loopline usage`. Without the binary or the
        endpoints the table is not measured, and the notes say why."""
        from loopline.demo.usage import local_metrics_url, prometheus_binary, write_config

        binary = prometheus_binary()
        if binary is None:
            self.record.note(
                "usage per caller not measured: prometheus is not installed "
                "(scripts/install-system-deps.sh installs it)"
            )
            return
        if not self.record.endpoints.get("Metrics"):
            serving_root = self.state_dir / "operator" / "serving"
            url = local_metrics_url(serving_root, self.s.namespace, self.s.model)
            if url:
                with self.record._lock:
                    self.record.endpoints["Metrics"] = url
        if not self.record.endpoints.get("Metrics"):
            self.record.note("usage per caller not measured: the Model shows no metrics endpoint")
            return
        folder = self.state_dir / "prometheus"
        write_config(folder, self.record.endpoints)
        self.launch_prometheus(binary, folder)

    def launch_prometheus(self, binary: str, folder: Path) -> None:
        """Start Prometheus on `folder`'s prometheus.yml and wait until it is ready."""
        from loopline.demo.usage import prometheus_argv

        port = free_port()
        record = self.processes.start(
            "prometheus", prometheus_argv(binary, folder, port), stop_timeout=10.0
        )
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/-/ready", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            supervisor.wait_until(record, ready, timeout=60.0, what="ready")
        except SupervisorError as exc:
            self.record.note(f"usage per caller not measured: Prometheus did not start: {exc}")
            return
        self.prometheus_url = url
        self.record.links["Prometheus"] = url
        self.record.step(
            "Prometheus scraping the model server",
            detail=f"{url}, every second",
            command=f"loopline usage --prometheus-url {url} --model {self.s.namespace}/{self.s.model} --since 1h",
        )
