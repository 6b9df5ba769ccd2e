"""The closed-loop scenario: what `loopline demo` runs and what the e2e test asserts on.

Acts, each a method, each logging a step with the kubectl command that shows the same thing:

1. the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok);
2. MLflow's UI on a free loopback port over the demo's SQLite store;
3. plant history from the data generator, as a Feast repository;
4. the operator (`loopline operator run`) with local backends, as a child process;
5. `manifests/examples`' Pipeline and the `drill-ae` Model, applied with kubectl;
6. wait for the first champion to serve; the simulated plant starts sending rows (REST and
   gRPC) and landing them in the offline store;
7. baseline traffic, then a recipe change; the monitor raises a retraining request on the
   Model, the operator runs the pipeline (trigger drift), the gate, the canary, the promotion;
8. both versions scored on the same fresh post-change data;
9. a non-core sensor dies and the fallback answers.

Whatever was started is recorded (`DemoProcesses`) and stopped at the end unless `keep`.
A piece of Loopline that is not in the tree, or a stage that never completes, ends the run
early with a note that names it; the report is still written with what was measured.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml

from loopline import kube, quiet
from loopline.cluster import process as proc
from loopline.cluster.errors import ClusterError
from loopline.cluster.state import ProcessRecord
from loopline.data.generator import GeneratorConfig, Manifest, generate, live_traffic
from loopline.data.schema import CORE_SENSORS, SENSORS, factory_schema
from loopline.demo.landing import Landing
from loopline.demo.live import LiveView
from loopline.demo.processes import DemoProcesses
from loopline.demo.record import Comparison, DemoRecord, VersionInfo
from loopline.demo.report import write_report
from loopline.demo.settings import DemoSettings
from loopline.demo.traffic import GrpcClient, InferClient, Plant, PlantStream, RestClient
from loopline.demo.watch import ModelWatcher
from loopline.types.common import registered_model_name

log = logging.getLogger(__name__)

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "manifests" / "examples"
LANDING_INTERVAL = 2.0  # seconds between writes of the plant's readings to the offline store
# What the demo creates under its state directory (and deletes at the start of the next run).
OWN_DIRS = ("cluster", "mlflow", "data", "feature_repo", "operator", "manifests", "monitor")


class MissingPiece(RuntimeError):
    """A part of Loopline the demo needs is not in this tree."""


class BrokenPiece(RuntimeError):
    """A part of Loopline the demo needs is in the tree but failed; the message says how."""


class StageTimeout(RuntimeError):
    """A stage of the loop did not complete in time; the message says which and where."""


class ModelFailed(RuntimeError):
    """The Model went to phase Failed; the message is its status message."""


@dataclass
class DemoResult:
    """What a run showed; the e2e test asserts the story on it."""

    record: DemoRecord
    state_dir: Path
    demo_id: str
    report: Path | None = None
    completed: bool = False
    problems: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # pieces not in the tree
    leftovers: list[int] = field(default_factory=list)
    kubeconfig: Path | None = None
    tracking_uri: str = ""
    model_uri_name: str = ""

    @property
    def first_champion(self) -> str | None:
        m = self.record.first_marker("serving")
        return m.label.removeprefix("version ") if m else None

    @property
    def drift_runs(self) -> list[str]:
        return [r.run_id for r in self.record.runs.values() if r.trigger == "drift"]


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns something truthy; StageTimeout names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StageTimeout(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def load_examples(directory: Path, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The example Model named `model` and the Pipeline it references, from YAML files."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.y*ml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    models = [
        d for d in docs if d.get("kind") == "Model" and d.get("metadata", {}).get("name") == model
    ]
    if not models:
        raise MissingPiece(
            f"no example Model named {model!r} in {directory} (the demo reads "
            "manifests/examples/; is the checkout complete?)"
        )
    spec = models[0].get("spec", {})
    pipeline_name = (spec.get("pipelineRef") or {}).get("name")
    pipelines = [
        d
        for d in docs
        if d.get("kind") == "Pipeline" and d.get("metadata", {}).get("name") == pipeline_name
    ]
    if not pipelines:
        raise MissingPiece(f"the example Pipeline {pipeline_name!r} is not in {directory}")
    return models[0], pipelines[0]


def demo_model(model: dict[str, Any], settings: DemoSettings, namespace: str) -> dict[str, Any]:
    """The example Model as the demo applies it: its namespace, retraining on drift on, and
    the demo's sizes (epochs, window, canary step) where set.

    The data quality policy is the Model's own: the drift-triggered retraining run's shifted
    window passes the gate because distribution is advisory in drift runs
    (`loopline.data.quality.advisory_dimensions`), not because the demo loosens a minimum."""
    doc = json.loads(json.dumps(model))
    doc["metadata"] = {"name": doc["metadata"]["name"], "namespace": namespace}
    spec = doc.setdefault("spec", {})
    monitoring = spec.setdefault("monitoring", {})
    monitoring["enabled"] = True
    monitoring["retrainOnDrift"] = True
    if settings.window_size is not None:
        monitoring["windowSize"] = settings.window_size
    if settings.epochs is not None:
        spec.setdefault("training", {})["epochs"] = settings.epochs
    if settings.canary_step_seconds is not None:
        canary = spec.setdefault("serving", {}).setdefault("canary", {})
        canary["stepSeconds"] = settings.canary_step_seconds
    return doc


def demo_pipeline(pipeline: dict[str, Any], namespace: str) -> dict[str, Any]:
    doc = json.loads(json.dumps(pipeline))
    doc["metadata"] = {"name": doc["metadata"]["name"], "namespace": namespace}
    return doc


def loop_failure(rec: DemoRecord, waiting_for: str) -> str | None:
    """Why the closed loop cannot reach `waiting_for` any more, or None.

    Only the loop's own retraining counts: the first drift-triggered run and the first gate
    decision. A later request (drift against the new champion while its canary runs) may train
    a challenger that the gate rightly rejects; that is the platform working, not the loop
    failing."""
    decision = rec.first_marker("gate-passed", "gate-rejected")
    if (
        decision is not None
        and decision.kind == "gate-rejected"
        and waiting_for in ("gate-passed", "promoted")
    ):
        return f"the gate rejected the challenger: {decision.label}"
    drift_runs = [r for r in list(rec.runs.values()) if r.trigger == "drift"]
    first = min(drift_runs, key=lambda r: r.started_t or 0.0, default=None)
    if first is not None and first.phase == "Failed":
        return (
            f"the retraining run {first.run_id} failed at step {first.step or '-'}: {first.message}"
        )
    return None


class Demo:
    """One run of the scenario. `run()` never leaves processes behind unless `keep`."""

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

    # -- helpers ---------------------------------------------------------------------------

    def kubectl_line(self, *args: str) -> str:
        """The command a person would type (with the demo's KUBECONFIG exported)."""
        return "kubectl " + " ".join(shlex.quote(a) for a in args)

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
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
            env["LOOPLINE_OPERATOR_KUBECONFIG"] = str(self.kubeconfig)
        return env

    # -- acts ------------------------------------------------------------------------------

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
        port = proc.free_ports(1)[0]
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
            proc.wait_until(self._mlflow, healthy, timeout=timeout, what="healthy")
        except ClusterError as exc:  # ComponentStartError: the UI is not essential to the loop
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
        from loopline.cli.main import COMMANDS

        if "operator" not in COMMANDS:
            raise MissingPiece(
                "`loopline operator run` is not in the tree yet (operators issue: "
                "loopline/cli COMMANDS has no 'operator')"
            )
        argv = [sys.executable, "-m", "loopline.cli.main", "operator", "run"]
        record = self.processes.start("operator", argv, env=self.child_env())
        time.sleep(1.0)
        if proc.exited(record):
            raise BrokenPiece(
                f"the operator exited at start; last lines of {record.log}:\n"
                + proc.log_tail(record.log)
            )
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
            command=self.kubectl_line(
                "get", "models.loopline.dev", self.s.model, "-n", self.s.namespace, "-w"
            ),
        )
        self.watcher = ModelWatcher(self.api, self.s.namespace, self.s.model, self.record).start()

    def wait_first_champion(self) -> None:
        rec = self.record
        rec.set_segment("first training")

        def serving() -> bool:
            if rec.phase == "Failed":
                raise ModelFailed(f"the Model failed before serving: {rec.message}")
            return rec.first_marker("serving") is not None

        wait_for(
            serving,
            timeout=self.s.serving_timeout,
            what=f"the first champion of {self.s.model} to serve (phase {rec.phase or '-'})",
        )
        wait_for(
            lambda: rec.endpoints.get("REST") and rec.endpoints.get("GRPC"),
            timeout=60,
            what="REST and gRPC endpoints in the Model's status",
        )
        rec.step(
            "First champion serving",
            detail=f"version {rec.champion} at {rec.endpoints.get('REST')}",
            command=self.kubectl_line(
                "get",
                "models.loopline.dev",
                self.s.model,
                "-n",
                self.s.namespace,
                "-o",
                "jsonpath={.status.champion}",
            ),
        )

    def _clients(self) -> list[InferClient]:
        rest = self.record.endpoints["REST"]
        grpc_target = self.record.endpoints["GRPC"].removeprefix("grpc://")
        clients: list[InferClient] = []
        for protocol in self.s.protocols:
            if protocol == "rest":
                clients.append(RestClient(rest, self.s.model, SENSORS))
            elif protocol == "grpc":
                clients.append(GrpcClient(grpc_target, self.s.model, SENSORS))
            else:
                raise ValueError(f"protocols: unknown protocol {protocol!r}; use rest or grpc")
        return clients

    def start_traffic(self) -> None:
        assert self.history is not None
        assert self.landing is not None
        self.stream = PlantStream(
            self.history,
            fault_fraction=self.s.fault_fraction,
            clock=lambda: datetime.now(UTC),
        )
        landing = self.landing
        self.plant = Plant(
            self.stream,
            self._clients(),
            self.record,
            rate=self.s.rate,
            trace_machine=self.s.trace_machine,
            trace_features=list(CORE_SENSORS),
            on_answer=lambda batch, _answer: landing.add(batch),
        ).start()
        self.record.set_segment("baseline")
        self.stream.set_segment("baseline")
        self.record.step(
            "Plant traffic started",
            detail=f"{self.s.rate:g} requests/s over {', '.join(self.s.protocols)}, "
            f"{self.s.machines} machines per request",
            command=f"curl -s {self.record.endpoints['REST']}/v2/models/{self.s.model}",
        )

    def _run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._tick()
            time.sleep(0.5)

    def _tick(self) -> None:
        """Periodic work while traffic flows: land new rows for later training runs."""
        now = time.monotonic()
        if self.landing is not None and not self._landing_stop and now >= self._next_landing:
            self.landing.land()
            self._next_landing = now + LANDING_INTERVAL

    def act_recipe_change(self) -> None:
        assert self.stream is not None
        rec = self.record
        self._run_for(self.s.baseline_seconds)
        self.stream.change_recipe(self.s.recipe_shift, segment="recipe-change")
        rec.set_segment("recipe-change")
        rec.mark("recipe-change", f"operating point x{1 + self.s.recipe_shift:g}")
        rec.step(
            "Recipe changed",
            detail=f"feed rate and spindle speed x{1 + self.s.recipe_shift:g}",
            command=self.kubectl_line(
                "get",
                "models.loopline.dev",
                self.s.model,
                "-n",
                self.s.namespace,
                "-o",
                "jsonpath={.status.drift}",
            ),
        )
        deadline = time.monotonic() + self.s.loop_timeout
        steps = [
            (
                "retrain-requested",
                "Drift detected: retraining requested",
                (
                    "get",
                    "events",
                    "-n",
                    self.s.namespace,
                    "--field-selector",
                    f"involvedObject.name={self.s.model}",
                ),
            ),
            (
                "registered",
                "Retrained on the new recipe: challenger registered",
                (
                    "get",
                    "models.loopline.dev",
                    self.s.model,
                    "-n",
                    self.s.namespace,
                    "-o",
                    "jsonpath={.status.currentRun}",
                ),
            ),
            (
                "gate-passed",
                "Gate passed: the challenger beats the champion",
                (
                    "get",
                    "models.loopline.dev",
                    self.s.model,
                    "-n",
                    self.s.namespace,
                    "-o",
                    "jsonpath={.status.challenger}",
                ),
            ),
            (
                "promoted",
                "Canary done: new champion serves all traffic",
                (
                    "get",
                    "models.loopline.dev",
                    self.s.model,
                    "-n",
                    self.s.namespace,
                    "-o",
                    "jsonpath={.status.champion}",
                ),
            ),
        ]
        for kind, title, args in steps:

            def seen(kind: str = kind) -> bool:
                self._tick()
                failure = loop_failure(rec, kind)
                if failure is not None:
                    raise ModelFailed(failure)
                return rec.first_marker(kind) is not None

            wait_for(
                seen,
                timeout=max(1.0, deadline - time.monotonic()),
                what=f"{kind} (phase {rec.phase or '-'})",
            )
            marker = rec.first_marker(kind)
            rec.step(title, detail=marker.label if marker else "", command=self.kubectl_line(*args))
        self._landing_stop = True

    def compare_versions(self) -> None:
        """Both versions on the same fresh post-change data (never seen by either)."""
        from loopline.models.bundle import load_bundle
        from loopline.models.evaluation import evaluate_bundle

        assert self.stream is not None
        rec = self.record
        old = rec.first_marker("serving")
        old_version = old.label.removeprefix("version ") if old else ""
        new_version = rec.champion
        frame, _ = live_traffic(
            self.stream.manifest,
            minutes=self.s.interval_seconds / 60 * 300,
            fault_fraction=0.05,
            sensor_faults_per_day=0.0,
        )
        name = registered_model_name(self.s.namespace, self.s.model)
        metrics: dict[str, dict[str, float]] = {}
        keep = ("f1", "roc_auc", "precision", "recall", "alarm_rate")
        for version in (old_version, new_version):
            bundle = load_bundle(f"models:/{name}/{version}", tracking_uri=self.tracking_uri)
            evaluation = evaluate_bundle(bundle, frame)
            metrics[version] = {k: evaluation.metrics[k] for k in keep if k in evaluation.metrics}
        rec.add_comparison(
            Comparison(
                dataset="fresh data after the recipe change",
                rows=len(frame),
                metrics=metrics,
            )
        )
        self._versions(name)
        summary = ", ".join(f"v{v}: f1 {m.get('f1', float('nan')):.3f}" for v, m in metrics.items())
        rec.step("Both versions scored on fresh post-change data", detail=summary)

    def _versions(self, name: str) -> None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        for mv in client.search_model_versions(f"name='{name}'"):
            run = client.get_run(mv.run_id) if mv.run_id else None
            self.record.upsert_version(
                VersionInfo(
                    version=str(mv.version),
                    aliases=list(getattr(mv, "aliases", []) or []),
                    run_id=mv.run_id or "",
                    metrics=dict(run.data.metrics) if run else {},
                    tags={
                        k: v
                        for k, v in (run.data.tags if run else {}).items()
                        if not k.startswith("mlflow.")
                    },
                )
            )

    def _metrics_url(self) -> str:
        metrics = self.record.endpoints.get("Metrics")
        if metrics:
            return metrics if metrics.endswith("/metrics") else f"{metrics.rstrip('/')}/metrics"
        return f"{self.record.endpoints.get('REST', '')}/metrics"

    def act_dead_sensor(self) -> None:
        assert self.stream is not None
        rec = self.record
        self.stream.kill_sensor(self.s.dead_sensor, segment="dead-sensor")
        rec.set_segment("dead-sensor")
        rec.mark("sensor-dead", self.s.dead_sensor)
        rec.step(
            "Sensor died",
            detail=f"{self.s.dead_sensor} reads NaN on every machine; the fallback answers",
            command=f"curl -s {self._metrics_url()} | grep fallback",
        )
        self._run_for(self.s.dead_sensor_seconds)
        self.stream.revive_sensor(self.s.dead_sensor, segment="sensor-restored")
        rec.mark("sensor-restored", self.s.dead_sensor)
        rec.set_segment("sensor-restored")
        self._run_for(min(3.0, self.s.dead_sensor_seconds))

    # -- the whole run ---------------------------------------------------------------------

    def run(self) -> DemoResult:
        result = DemoResult(
            record=self.record,
            state_dir=self.state_dir,
            demo_id=self.processes.demo_id,
            tracking_uri=self.tracking_uri,
            model_uri_name=registered_model_name(self.s.namespace, self.s.model),
        )
        try:
            self.stop_previous()
            result.demo_id = self.processes.demo_id
            self.start_cluster()
            result.kubeconfig = self.kubeconfig
            self.start_mlflow()
            self.prepare_data()
            self.start_operator()
            self.apply_examples()
            self.wait_first_champion()
            self.mlflow_ready()
            self.start_traffic()
            self.act_recipe_change()
            self.compare_versions()
            self.act_dead_sensor()
            result.completed = True
        except MissingPiece as exc:
            result.missing.append(str(exc))
            result.problems.append(str(exc))
            self.record.note(str(exc))
            self.record.step("Stopped early: a piece is missing", detail=str(exc))
            log.warning("demo stopped early: %s", exc)
        except (BrokenPiece, StageTimeout, ModelFailed, ClusterError) as exc:
            result.problems.append(str(exc))
            self.record.note(str(exc))
            self.record.step("Stopped early", detail=str(exc).splitlines()[0])
            log.warning("demo stopped early: %s", exc)
        finally:
            self.shutdown(result)
        return result

    def shutdown(self, result: DemoResult) -> None:
        """Stop traffic and watching, write the report, then (unless keep) stop everything."""
        if self.plant is not None:
            self.plant.stop()
        if self.watcher is not None:
            self.watcher.poll()
            self.watcher.stop()
        self.record.finish()
        if not self.keep:
            self.processes.stop_all()
            result.leftovers = self.processes.leftovers()
        if self.api is not None:
            self.api.close()
        if self.write_report:
            result.report = write_report(self.record, self.s.resolved_report_dir())
