"""Settings of the Loopline operator (`LOOPLINE_OPERATOR_*`).

Backends are chosen by short name (`local`, `kubernetes`, `kfp`, `seldon`) from the maps in
`loopline.operators.backends`, as Feast and MLServer pick theirs, so a cluster deployment and
a laptop run the same operator with different environment variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loopline.settings import get_settings


def _state(*parts: str) -> Path:
    return get_settings().state_dir.joinpath("operator", *parts)


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPLINE_OPERATOR_", extra="forbid")

    pipeline_backend: str = Field(
        default="local",
        description="Pipeline backend: local (worker processes), kubernetes (one Job per run "
        "from the training image) or kfp (a Kubeflow Pipelines API server).",
    )
    serving_backend: str = Field(
        default="local",
        description="Serving backend: local (model server processes on loopback), kubernetes "
        "(a Deployment and Service per Model) or seldon (Seldon Core 2 objects).",
    )
    monitoring_backend: str = Field(
        default="",
        description="Drift monitor backend: local (one process per Model) or kubernetes (a "
        "Deployment and Service per Model). Empty: local with local serving, else kubernetes.",
    )
    runtime_image: str = Field(
        default="",
        description="Cluster backends: the Loopline runtime image (repository:tag) that model "
        "servers, drift monitors and (kubernetes pipeline backend) batch-scoring Jobs run.",
    )
    training_image: str = Field(
        default="",
        description="Kubernetes pipeline backend: the Loopline training image (torch) that "
        "training Jobs run (and batch-scoring Jobs when runtime_image is empty).",
    )
    image_pull_policy: str = Field(
        default="IfNotPresent",
        pattern="^(Always|IfNotPresent|Never)$",
        description="Cluster backends: pull policy of the pods the operator creates.",
    )
    cluster_tracking_uri: str = Field(
        default="",
        description="Cluster backends: the MLflow tracking URI as pods reach it (e.g. the "
        "chart's MLflow Service); empty: the operator's own tracking URI.",
    )
    async_redis_url: str = Field(
        default="",
        description="Kubernetes and seldon serving backends: the Redis the model server pods "
        "(the Seldon Servers' MLServer hosts) take asynchronous requests from (their "
        "LOOPLINE_ASYNC_REDIS_URL; a plain value of the Deployment or Server, so a URL without "
        "a password); empty: asynchronous inference off.",
    )
    server_service_account: str = Field(
        default="",
        description="Kubernetes serving backend: the ServiceAccount the model server pods run "
        "as, with its token mounted, so they can verify callers' tokens by TokenReview (the "
        "chart's `<release>-model-server`, bound to create on tokenreviews only); empty: no "
        "ServiceAccount token in the pods.",
    )
    server_service_account_namespaces: list[str] = Field(
        default_factory=list,
        description="Kubernetes serving backend: the namespaces where server_service_account "
        "exists (JSON list); Models elsewhere get pods without a token. Empty: every namespace.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the operator's Prometheus /metrics (the scheduled batch runs' "
        "loopline_usage_* series, from each Model's status.batch.usage); 0: none.",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="Address the /metrics server listens on (metrics_port).",
    )
    storage_class: str = Field(
        default="",
        description="Cluster backends: StorageClass of the volumes the operator claims (a "
        "monitor's state); empty: the cluster's default StorageClass.",
    )
    volume_permissions_init: bool = Field(
        default=False,
        description="Cluster backends: chown each claimed volume to the pods' user with an init "
        "container (hostPath volumes, e.g. the local cluster's, ignore fsGroup).",
    )
    monitor_volume_size: str = Field(
        default="1Gi",
        pattern=r"^[0-9]+(Mi|Gi|Ti)$",
        description="Kubernetes monitoring backend: size of each monitor's claim (its "
        "windows, decisions and undelivered retraining requests).",
    )
    monitor_cluster_role: str = Field(
        default="loopline-monitor",
        description="Kubernetes monitoring backend: the ClusterRole (patch on Models, held to "
        "the retraining annotations by an admission policy) bound to each monitor's own "
        "ServiceAccount.",
    )
    monitor_ingress_peers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Kubernetes monitoring backend: NetworkPolicyPeer objects (JSON list) "
        "admitted to a monitor's port besides its Model's model servers, e.g. Prometheus.",
    )
    feature_repo_claim: str = Field(
        default="loopline-feature-repo",
        description="Kubernetes pipeline backend: the claim in the Model's namespace holding "
        "the Feast repository that training pods mount read-only; empty: the repository in "
        "the training image (definitions only, no registered data).",
    )
    training_env_secret: str = Field(
        default="loopline-training-env",
        description="Kubernetes pipeline backend: an optional Secret in the Model's namespace "
        "whose keys become the training pod's environment (store and MLflow credentials).",
    )
    training_deadline_seconds: int = Field(
        default=6 * 3600,
        gt=0,
        description="Kubernetes pipeline backend: a training Job running longer is stopped "
        "(DeadlineExceeded), so a step hung on a lost store never holds a Model in Training.",
    )
    canary_without_metrics: Literal["hold", "time"] = Field(
        default="hold",
        description="Kubernetes serving backend: what a canary step does when no server pod's "
        "metrics can be read (the operator cannot reach pod IPs): `hold` it and say so in the "
        "Model's status, or `time`: pass it after stepSeconds, unjudged.",
    )
    runs_dir: Path = Field(
        default_factory=lambda: _state("runs"),
        description="Local pipeline backend: one directory per run id (spec, result, log).",
    )
    worker_command: list[str] = Field(
        default_factory=list,
        description="Local pipeline backend: the worker command (JSON list); it gets "
        "`--spec spec.json --result result.json` appended. Empty means "
        "`python -m loopline.pipelines.run`.",
    )
    fork_worker: bool = Field(
        default=True,
        description="Local pipeline backend: fork each run from one worker process that "
        "imported torch, MLflow, Feast, pandas, great_expectations and kfp once at the "
        "operator's start, instead of starting a fresh interpreter per run (which pays those "
        "imports again). Off, or with a custom worker_command, every run is a fresh process.",
    )
    fork_worker_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        description="Local pipeline backend: how long a run waits for a fork worker that is "
        "still importing before it starts as a fresh process instead.",
    )
    serving_dir: Path = Field(
        default_factory=lambda: _state("serving"),
        description="Local serving backend: state and logs of model server processes.",
    )
    feature_repo: str = Field(
        default_factory=lambda: str(Path(__file__).resolve().parents[1] / "feature_repo"),
        description="Feast repository path given to training runs.",
    )
    reconcile_interval: float = Field(
        default=10.0, gt=0, description="Seconds between level-based reconciles of each object."
    )
    reconcile_workers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Threads reconciling objects from the work queue (one object is never "
        "reconciled by two at once).",
    )
    namespaces: list[str] = Field(
        default_factory=list, description="Namespaces to watch (JSON list); empty means all."
    )
    cleanup_retries: int = Field(
        default=5,
        ge=0,
        description="Attempts at outside cleanup on deletion before giving up with an Event "
        "(deletion is never blocked forever).",
    )
    history_chunk_size: int = Field(
        default=100,
        ge=1,
        le=480,  # 480 decisions of at most 2 KiB each fit a ConfigMap's 1 MiB
        description="Decisions per ConfigMap of a Model's history ledger (docs/history.md); "
        "a full chunk is sealed (immutable) and the next one opened.",
    )
    history_chunks: int = Field(
        default=200,
        ge=1,
        description="Chunks of a Model's history kept: the oldest beyond it is deleted, so a "
        "ledger holds at most history_chunks * history_chunk_size decisions.",
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig file; unset means in-cluster, then ~/.kube/config."
    )
    seldon_namespace: str = Field(
        default="",
        description="Seldon backend: namespace of the Seldon objects; empty means the Model's.",
    )
    seldon_image: str = Field(
        default="",
        description="Seldon backend: the Loopline runtime image the Seldon Server runs; "
        "empty: runtime_image.",
    )
    seldon_open_ports: list[int] = Field(
        default_factory=lambda: [9001, 9501, 9006, 9008, 8082],  # serving.seldon's
        description="Seldon backend: the ports of a Server's pods that other pods may reach "
        "(its NetworkPolicy closes the rest, MLServer's own 9000/9500 among them). Change it "
        "only with a ServerConfig whose agent listens elsewhere.",
    )
    kfp_host: str = Field(default="", description="KFP backend: the KFP API server URL.")
