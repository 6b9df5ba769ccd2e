"""The demo's stack on the real containerd node (`loopline demo --cluster`).

The same acts as the local demo (`loopline.demo.acts`), on a stack of pods instead of host
processes: `loopline cluster up --runtime containerd`, the images pushed to its registry, the
chart (`values-local.yaml`: the operator with the `kubernetes` serving and pipeline backends,
MLflow in the cluster), a claim with the Feast repository that training Jobs mount, seeded
and then fed the plant's landed rows by a landing pod (`loopline.demo.cluster_objects`).
The model servers, the drift monitor and the training Jobs are the pods the operator creates.
The plant sends its traffic to the Model's Service by its ClusterIP (kube-proxy routes it
from the host), and the demo reads MLflow through its Service the same way.

Nothing here is a host process but the cluster's own: stopping the demo is `loopline cluster
down` on `<state>/cluster`, which `DemoProcesses.stop_all` does.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from loopline import kube
from loopline.cluster.kubectl import Kubectl
from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import factory_schema
from loopline.demo import cluster_objects as objects
from loopline.demo.errors import BrokenPiece, MissingPiece
from loopline.demo.landing import Landing
from loopline.demo.stack import DemoStack
from loopline.operators.builders.kube_jobs import FEATURE_REPO_MOUNT
from loopline.wait import wait_for

CHART = Path(__file__).resolve().parents[2] / "helm" / "loopline"
REGISTRY_PORT_FILE = "registry-port"  # beside the state's own folders: it outlives a run


class ClusterLanding(Landing):
    """The plant's landing, written locally and then into the claim through the landing pod:
    the files `land` rewrote (the source and its rolling features) go up together."""

    def __init__(self, repo_dir: Path, history: Any, upload: Any) -> None:
        super().__init__(repo_dir, history)
        self._upload = upload
        self.uploads = 0

    def land(self) -> int:
        added = super().land()
        if added:
            names = [self.spec.source]
            if self.spec.rolling_source:
                names.append(self.spec.rolling_source)
            self._upload(names)
            self.uploads += 1
        return added


class ClusterStack(DemoStack):
    """`DemoStack` with every piece a pod on the real node; the acts are unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.s = objects.cluster_settings(self.s)
        self.tracking_uri = ""  # MLflow's Service, known once the chart is installed
        self.registry = ""
        self.runtime_image = ""
        self._addresses: dict[tuple[str, str], str] = {}
        self._addresses_lock = threading.Lock()
        self._ctl: Kubectl | None = None
        self.restarts: set[str] = set()
        # (seconds since start, version, step index) of every canary step seen: the stretch's
        # check that a restarted operator goes on from its step
        self.rollout_steps: list[tuple[float, str, int]] = []

    # -- helpers ---------------------------------------------------------------------------

    @property
    def ctl(self) -> Kubectl:
        if self._ctl is None:
            raise RuntimeError("the cluster is not up")
        return self._ctl

    def reach_url(self, url: str) -> str:
        """An in-cluster Service URL as the host reaches it (its ClusterIP)."""
        key = objects.service_key(url.split("://")[-1].split("/")[0].split(":")[0])
        if key is not None and key not in self._addresses and self.api is not None:
            from kubernetes import client as k8s
            from kubernetes.client.exceptions import ApiException

            try:
                service = k8s.CoreV1Api(self.api).read_namespaced_service(key[1], key[0])
            except (ApiException, OSError):
                return url  # not there yet: the next status update asks again
            ip = service.spec.cluster_ip
            if ip and ip != "None":
                with self._addresses_lock:
                    self._addresses[key] = ip
        return objects.reachable_url(url, self._addresses)

    def _wait_pods_ready(self, selector: str, what: str, timeout: float) -> None:
        """Wait for the pods of `selector` to exist and be Ready; a failure says why."""
        ns = self.s.namespace
        wait_for(
            lambda: bool(
                self.ctl("get", "pods", "-n", ns, "-l", selector, "-o", "name").stdout.split()
            ),
            timeout=120,
            what=f"a pod of {what}",
        )
        done = self.ctl(
            *("wait", "-n", ns, "--for=condition=Ready", "pod", "-l", selector),
            f"--timeout={int(timeout)}s",
            check=False,
            timeout=timeout + 30,
        )
        if done.returncode != 0:
            described = self.ctl("describe", "pods", "-n", ns, "-l", selector, check=False)
            raise BrokenPiece(
                f"{what} not Ready after {timeout:.0f}s: {done.stderr.strip()}\n"
                f"{described.stdout[-3000:]}"
            )

    def _in_landing_pod(self, script: str, *args: str, data: bytes = b"") -> str:
        ctl = self.ctl
        argv = [
            str(ctl.binary),
            f"--kubeconfig={ctl.kubeconfig}",
            *("exec", "-i", "-n", self.s.namespace, objects.LANDING_POD),
            *("-c", objects.LANDING_CONTAINER, "--", "python", "-c", script, *args),
        ]
        result = subprocess.run(argv, input=data, capture_output=True, timeout=300, check=False)
        if result.returncode != 0:
            raise BrokenPiece(
                f"the landing pod failed: {result.stderr.decode(errors='replace')[-2000:]}"
            )
        return result.stdout.decode(errors="replace")

    def upload(self, names: list[str]) -> None:
        """Files of the local repository into the claim (atomically, each)."""
        self._in_landing_pod(
            objects.UNPACK_SCRIPT, FEATURE_REPO_MOUNT, data=objects.pack(self.repo_dir, names)
        )

    def on_tick(self) -> None:
        """With `restart_operator`: follow the canary's steps, and delete the operator pod
        once mid-run and once mid-canary (`cluster_objects.restart_due`)."""
        if not self.s.restart_operator or self.watcher is None or self.watcher.last is None:
            return
        status = self.watcher.last.get("status") or {}
        rollout = status.get("rollout") or {}
        if rollout.get("version"):
            step = (str(rollout["version"]), int(rollout.get("stepIndex") or 0))
            if not self.rollout_steps or self.rollout_steps[-1][1:] != step:
                self.rollout_steps.append((self.record.now(), *step))
        due = objects.restart_due(status, self.restarts)
        if due is None:
            return
        self.restarts.add(due)
        ns = self.s.namespace
        self.ctl("delete", "pod", "-n", ns, "-l", objects.OPERATOR_SELECTOR, "--wait=false")
        what = (
            f"while run {(status.get('currentRun') or {}).get('runId')} trains"
            if due == "run"
            else f"mid-canary, at step {rollout.get('stepIndex')} ({rollout.get('weight')} %)"
        )
        self.record.mark("operator-restarted", what)
        self.record.step(
            "Operator pod deleted " + what,
            detail="its Deployment starts a new one, which must adopt what is in flight",
            command=self.kubectl_line(
                "get", "pods", "-n", ns, "-l", objects.OPERATOR_SELECTOR, "-w"
            ),
        )

    # -- the stack -------------------------------------------------------------------------

    def start_cluster(self) -> None:
        from loopline.cluster.manager import LocalCluster
        from loopline.cluster.settings import ClusterSettings

        cluster_dir = (self.s.cluster_dir or self.state_dir / "cluster").expanduser().absolute()
        self.processes.set_cluster(cluster_dir)
        cluster = LocalCluster(ClusterSettings(state_dir=cluster_dir))
        started = time.monotonic()
        state = cluster.up(runtime="containerd", registry_port=self._registry_port()).state
        self.kubeconfig = cluster.kubeconfig_path
        self.kubectl_bin = state.bin_dir / "kubectl"
        self._ctl = Kubectl(self.kubectl_bin, self.kubeconfig)
        self.registry = f"127.0.0.1:{state.ports['registry']}"
        self.api = kube.api_client(self.kubeconfig)
        self.record.links["KUBECONFIG"] = str(self.kubeconfig)
        self.record.step(
            "Kubernetes with a real containerd node up",
            detail=f"{state.server}, node {state.node_ip}, registry {self.registry} "
            f"in {time.monotonic() - started:.0f}s",
            command=f"export KUBECONFIG={self.kubeconfig} PATH={state.bin_dir}:$PATH; "
            "kubectl get nodes -o wide",
        )
        self.kubectl("create", "namespace", self.s.namespace)
        wait_for(
            lambda: (
                self.ctl(
                    "get", "serviceaccount", "default", "-n", self.s.namespace, check=False
                ).returncode
                == 0
            ),
            timeout=60,
            what=f"the default ServiceAccount of {self.s.namespace}",
        )
        self.record.step(
            "Namespace created: every pod of the loop runs here",
            detail=self.s.namespace,
            command=self.kubectl_line("get", "pods", "-n", self.s.namespace, "-w"),
        )

    def _registry_port(self) -> int:
        """The registry's port of this state directory's previous runs when it is free: skopeo
        knows which layers a registry has by its address, so the same address pushes only
        what changed (docs/images.md); a new one pushes every layer again."""
        from loopline.ports import free_port, port_is_free

        path = self.state_dir / REGISTRY_PORT_FILE
        try:
            port = int(path.read_text())
        except (OSError, ValueError):
            port = 0
        if not port or not port_is_free(port):
            port = free_port()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{port}\n")
        return port

    def _push_images(self) -> tuple[str, str]:
        """Build (a no-op when the store has this checkout's images) and push both images;
        returns (runtime tag, training tag)."""
        from loopline.images.errors import ImagesError
        from loopline.images.runner import Images
        from loopline.settings import get_settings

        images = Images(CHART.parents[1], get_settings().cache_dir, echo=lambda _line: None)
        started = time.monotonic()
        try:
            built = images.build(("runtime", "training"))
            pushed = images.push(self.registry, ("runtime", "training"))
        except (ImagesError, subprocess.CalledProcessError, FileNotFoundError) as exc:
            raise MissingPiece(f"the images could not be built or pushed: {exc}") from exc
        tags = {b.plan.flavour: b.plan.tag for b in built}
        # As pushed (`<registry>/loopline/<flavour>:<content tag>`), which the chart names too.
        self.runtime_image = next(r for r in pushed if r.endswith(f"/runtime:{tags['runtime']}"))
        self.record.step(
            "Images pushed to the node's registry",
            detail=", ".join(f"{b.plan.flavour}:{b.plan.tag} ({b.action})" for b in built)
            + f" in {time.monotonic() - started:.0f}s",
            command=f"loopline images push --registry {self.registry}",
        )
        return tags["runtime"], tags["training"]

    def start_mlflow(self) -> None:
        """The images, then the chart: MLflow, the operator, and their claims."""
        runtime_tag, training_tag = self._push_images()
        out = self.state_dir / "manifests"
        out.mkdir(parents=True, exist_ok=True)
        values = out / "values.json"
        values.write_text(
            json.dumps(objects.chart_values(self.registry, runtime_tag, training_tag), indent=2)
        )
        helm = [str(self.ctl.binary.parent / "helm"), f"--kubeconfig={self.kubeconfig}"]
        argv = [
            *("install", objects.RELEASE, str(CHART), f"--namespace={self.s.namespace}"),
            *(f"--values={CHART / 'values-local.yaml'}", f"--values={values}"),
        ]
        result = subprocess.run(
            [*helm, *argv], capture_output=True, text=True, timeout=300, check=False
        )
        if result.returncode != 0:
            raise BrokenPiece(f"helm install failed: {result.stderr.strip()[-2000:]}")
        self.record.step(
            "Chart installed: operator (kubernetes backends) and MLflow",
            detail=f"release {objects.RELEASE}, values {values}",
            command=f"helm {' '.join(argv)}",
        )
        self._wait_pods_ready(objects.MLFLOW_SELECTOR, "MLflow", timeout=900)
        address = self.reach_url(
            f"http://{objects.MLFLOW_SERVICE}.{self.s.namespace}.svc:{objects.MLFLOW_PORT}"
        )
        self.tracking_uri = address
        self.record.links["MLflow UI"] = address
        self.record.step(
            "MLflow running in the cluster",
            detail=f"{address} (Service {objects.MLFLOW_SERVICE})",
            command=self.kubectl_line(
                "get", "pods", "-n", self.s.namespace, "-l", objects.MLFLOW_SELECTOR
            ),
        )

    def mlflow_ready(self, timeout: float = 120.0) -> None:
        url = self.tracking_uri

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=timeout, what=f"MLflow at {url} healthy")
        self.record.step("MLflow UI up", detail=url, command=f"open {url}/#/models")

    def prepare_data(self) -> None:
        from loopline.data import features

        s = self.s
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        config = GeneratorConfig(
            machines=s.machines,
            days=s.history_days,
            interval_seconds=s.interval_seconds,
            start=now - timedelta(days=s.history_days),
            seed=s.seed,
            fault_fraction=s.fault_fraction,
            sensor_faults_per_day=0.0,
        )
        frame, manifest = generate(config)
        self.history = manifest
        # The sources inside the repository (relative paths), so it moves into the claim whole.
        features.create_repo(self.repo_dir, frame, factory_schema())
        ns = s.namespace
        self.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [
                        objects.feature_repo_claim(ns),
                        objects.landing_pod(ns, self.runtime_image),
                    ],
                }
            ),
        )
        self._wait_pods_ready(
            f"app.kubernetes.io/name={objects.LANDING_POD}", "the landing pod", timeout=600
        )
        self.upload(objects.repo_files(self.repo_dir))
        self._in_landing_pod(objects.APPLY_SCRIPT, FEATURE_REPO_MOUNT)
        self.landing = ClusterLanding(self.repo_dir, frame, self.upload)
        self.record.step(
            "Plant history in the Feast repository on the claim training Jobs mount",
            detail=f"{len(frame)} rows, {s.machines} machines, {s.history_days:g} days; "
            f"claim {objects.FEATURE_REPO_CLAIM} at {FEATURE_REPO_MOUNT}",
            command=self.kubectl_line(
                "exec",
                "-n",
                ns,
                objects.LANDING_POD,
                "--",
                "ls",
                "-l",
                f"{FEATURE_REPO_MOUNT}/data",
            ),
        )

    def start_operator(self) -> None:
        self._wait_pods_ready(objects.OPERATOR_SELECTOR, "the operator", timeout=600)
        self.record.step(
            "Operator running as a pod (kubernetes serving and pipeline backends)",
            detail=f"release {objects.RELEASE} in {self.s.namespace}",
            command=self.kubectl_line(
                "logs", "-n", self.s.namespace, "-l", objects.OPERATOR_SELECTOR, "-f"
            ),
        )

    def start_prometheus(self) -> None:
        """A Prometheus on the host scraping the Model's server and monitor pods, which the
        demo finds through the API every second (the report's usage table, as locally)."""
        import yaml

        from loopline.demo.usage import prometheus_binary

        binary = prometheus_binary()
        if binary is None:
            self.record.note(
                "usage per caller not measured: prometheus is not installed "
                "(scripts/install-system-deps.sh installs it)"
            )
            return
        folder = self.state_dir / "prometheus"
        folder.mkdir(parents=True, exist_ok=True)
        self._write_targets(folder)
        config = objects.prometheus_files_config(folder)
        (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        threading.Thread(
            target=self._follow_pods, args=(folder,), name="scrape-targets", daemon=True
        ).start()
        self.launch_prometheus(binary, folder)

    def _write_targets(self, folder: Path) -> None:
        from kubernetes import client as k8s

        from loopline.demo.usage import JOBS

        pods = k8s.CoreV1Api(self.api).list_namespaced_pod(
            self.s.namespace, label_selector=f"loopline.dev/model={self.s.model}"
        )
        items = self.api.sanitize_for_serialization(pods)["items"]
        for key, (component, port) in objects.SCRAPED.items():
            path = folder / f"targets-{JOBS[key]}.json"
            text = json.dumps(objects.scrape_targets(items, component, port))
            if not path.is_file() or path.read_text() != text:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(path)

    def _follow_pods(self, folder: Path) -> None:
        """Keep the target files current until the API client is closed (the demo's end)."""
        while True:
            time.sleep(1.0)
            try:
                self._write_targets(folder)
            except Exception:  # the API closed at the end, or a restart: stop following
                return
