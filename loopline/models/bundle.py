"""The model bundle: what a training run produces and what serving and the monitor load.

One bundle holds the primary network (all sensors) and the fallback network (core sensors
only), each with its own scaler and, for anomaly detection, its calibrated threshold. On disk
it is a folder (`bundle.json` + one `state_dict` file per network); in MLflow it is the
`bundle` artifact of one pyfunc model (see `loopline.models.pyfunc`). `load_bundle` accepts
either a local bundle folder or any MLflow model URI (`models:/name@champion`, `runs:/…`).

`score()` is the hot path of the model server: numpy in, numpy out, no pandas. The networks
are small dense stacks (Linear and ReLU) trained with torch; scoring runs the same weights in
one compiled call (`dense_kernel.PackedStack`), because at the batch sizes a line sends
torch's per-operator dispatch, and even numpy's (`DenseStack`, the reference), costs several
times the arithmetic. Training, the pyfunc and the server all score through this one path,
and unit tests hold it to numpy's and the torch module's outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loopline.models.dense_kernel import PackedStack
from loopline.models.nets import AUTOENCODER, CLASSIFIER, load_network
from loopline.models.standardize import Standardizer
from loopline.types.common import Task

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1
ARTIFACT_KEY = "bundle"  # key of the bundle folder among the pyfunc's artifacts


class BundleError(ValueError):
    """A bundle is malformed or an input does not fit it; the message names what is wrong."""


@dataclass(frozen=True)
class DenseStack:
    """A `Sequential` of `Linear` and `ReLU` layers as numpy arrays, for inference."""

    layers: tuple[tuple[np.ndarray, np.ndarray, bool], ...]  # (weight.T, bias, relu after)

    @classmethod
    def of(cls, net: nn.Module) -> DenseStack:
        modules = list(net.children()) if isinstance(net, nn.Sequential) else [net]
        layers: list[tuple[np.ndarray, np.ndarray, bool]] = []
        for module in modules:
            if isinstance(module, nn.Linear):
                weight = module.weight.detach().cpu().numpy().astype(np.float32).T.copy()
                bias = module.bias.detach().cpu().numpy().astype(np.float32).copy()
                layers.append((weight, bias, False))
            elif isinstance(module, nn.ReLU) and layers and not layers[-1][2]:
                weight, bias, _ = layers[-1]
                layers[-1] = (weight, bias, True)
            else:
                raise BundleError(f"cannot run {type(module).__name__} as a dense layer")
        if not layers:
            raise BundleError("network has no Linear layer")
        return cls(tuple(layers))

    def __call__(self, z: np.ndarray) -> np.ndarray:
        h = z
        for weight, bias, relu in self.layers:
            h = h @ weight
            h += bias
            if relu:
                np.maximum(h, 0.0, out=h)
        return h


@dataclass
class Scorer:
    """One network with its scaler (and threshold): the primary or the fallback model.

    The weights are read into a `DenseStack` when the scorer is made: train `net` first.
    """

    feature_names: list[str]
    scaler: Standardizer
    config: dict[str, Any]
    net: nn.Module
    threshold: float | None = None  # anomaly detection only
    class_names: list[str] = field(default_factory=list)  # classification only
    dense: DenseStack = field(init=False, repr=False)
    kernel: PackedStack = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.dense = DenseStack.of(self.net)
        self.kernel = PackedStack.of(self.scaler.mean, self.scaler.scale, self.dense.layers)

    @property
    def kind(self) -> str:
        return str(self.config["type"])

    def _check(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise BundleError(
                f"input has shape {x.shape}; expected [n, {len(self.feature_names)}] with "
                f"columns {self.feature_names}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def reconstruction_error(self, x: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per row in standardised units (float32 [n])."""
        return self.kernel.reconstruction_error(self._check(x))

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.kernel.forward(self._check(x))

    def warm_up(self) -> None:
        """Compile the scoring kernel now rather than on the first request."""
        self.kernel.warm_up()

    def score(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.kind == AUTOENCODER:
            if self.threshold is None:
                raise BundleError("autoencoder scorer has no threshold")
            score = self.reconstruction_error(x)
            threshold = np.full(score.shape, self.threshold, dtype=np.float32)
            return {
                "anomaly_score": score,
                "threshold": threshold,
                "is_anomaly": score > threshold,
            }
        logits = self.logits(x)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        idx = probs.argmax(axis=1).astype(np.int64, copy=False)
        names = np.asarray(self.class_names, dtype=object)[idx].astype(str)
        return {
            "class_index": idx,
            "class_name": names,
            "probabilities": probs.astype(np.float32, copy=False),
        }

    def to_dict(self, weights_file: str) -> dict[str, Any]:
        return {
            "feature_names": self.feature_names,
            "scaler": self.scaler.to_dict(),
            "network": self.config,
            "threshold": self.threshold,
            "class_names": self.class_names,
            "weights": weights_file,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], folder: Path) -> Scorer:
        state = torch.load(folder / data["weights"], map_location="cpu", weights_only=True)
        return cls(
            feature_names=list(data["feature_names"]),
            scaler=Standardizer.from_dict(data["scaler"]),
            config=dict(data["network"]),
            net=load_network(data["network"], state),
            threshold=None if data.get("threshold") is None else float(data["threshold"]),
            class_names=list(data.get("class_names") or []),
        )


@dataclass
class ModelBundle:
    """Primary and fallback scorers of one task, with the names serving needs to map inputs."""

    task: Task
    primary: Scorer
    fallback: Scorer
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = AUTOENCODER if self.task == Task.ANOMALY_DETECTION else CLASSIFIER
        for role, scorer in (("primary", self.primary), ("fallback", self.fallback)):
            if scorer.kind != expected:
                raise BundleError(f"{role}: a {self.task} bundle needs a {expected} network")
        missing = [n for n in self.fallback.feature_names if n not in self.primary.feature_names]
        if missing:
            raise BundleError(f"fallback features {missing} are not among the primary's")

    @property
    def feature_names(self) -> list[str]:
        return list(self.primary.feature_names)

    @property
    def core_feature_names(self) -> list[str]:
        return list(self.fallback.feature_names)

    @property
    def class_names(self) -> list[str]:
        return list(self.primary.class_names)

    @property
    def core_indices(self) -> list[int]:
        """Positions of the core features in `feature_names` (to slice a full matrix)."""
        return [self.feature_names.index(n) for n in self.core_feature_names]

    def score(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Score float32 [n, len(feature_names)] rows with the primary model."""
        return self.primary.score(x)

    def score_fallback(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Score float32 [n, len(core_feature_names)] rows with the core-sensor fallback."""
        return self.fallback.score(x)

    def warm_up(self) -> None:
        """Compile both scorers' kernels (a server calls this while it loads)."""
        self.primary.warm_up()
        self.fallback.warm_up()

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.primary.net.state_dict(), folder / "primary.pt")
        torch.save(self.fallback.net.state_dict(), folder / "fallback.pt")
        doc = {
            "format": BUNDLE_FORMAT,
            "task": str(self.task),
            "primary": self.primary.to_dict("primary.pt"),
            "fallback": self.fallback.to_dict("fallback.pt"),
            "metadata": self.metadata,
        }
        (folder / BUNDLE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        return folder

    @classmethod
    def load_dir(cls, folder: Path) -> ModelBundle:
        path = folder / BUNDLE_FILE
        if not path.is_file():
            raise BundleError(f"{folder} is not a model bundle: {BUNDLE_FILE} is missing")
        doc = json.loads(path.read_text())
        if doc.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{path}: format {doc.get('format')!r}, expected {BUNDLE_FORMAT}")
        return cls(
            task=Task(doc["task"]),
            primary=Scorer.from_dict(doc["primary"], folder),
            fallback=Scorer.from_dict(doc["fallback"], folder),
            metadata=dict(doc.get("metadata") or {}),
        )


def bundle_dir_of_model(model_dir: Path) -> Path:
    """The bundle folder inside a downloaded MLflow pyfunc model folder."""
    from mlflow.models import Model

    flavor = Model.load(str(model_dir / "MLmodel")).flavors.get("python_function", {})
    info = (flavor.get("artifacts") or {}).get(ARTIFACT_KEY)
    if not info:
        raise BundleError(f"{model_dir} is an MLflow model without a {ARTIFACT_KEY!r} artifact")
    return model_dir / info["path"]


INFERENCE_THREADS = 1


def load_bundle(
    model_uri: str | Path,
    *,
    tracking_uri: str | None = None,
    torch_threads: int | None = INFERENCE_THREADS,
) -> ModelBundle:
    """Load a bundle from a local folder or an MLflow model URI (`models:/name@champion`).

    Reads the bundle files directly instead of going through `mlflow.pyfunc.load_model`, so
    serving gets the numpy API without pandas and without MLflow's environment checks.

    `torch_threads` sets torch's intra-op threads for this process (None: leave it alone).
    One is right for these small networks: a forward pass costs tens of microseconds, and on a
    busy 2-core machine torch's default of one thread per core made it 10-30x slower in wall
    time (benchmarks/bench_training.py measures the same effect for training).
    """
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    local = Path(str(model_uri))
    if local.is_dir():
        if (local / BUNDLE_FILE).is_file():
            return ModelBundle.load_dir(local)
        if (local / "MLmodel").is_file():
            return ModelBundle.load_dir(bundle_dir_of_model(local))
    from contextlib import nullcontext

    from mlflow.artifacts import download_artifacts
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    uri = str(model_uri)
    if tracking_uri and uri.startswith("models:/"):
        # MLflow resolves `models:/` through the process-global registry URI whatever is passed
        # in, so another store used earlier in the process would answer. Resolve the version
        # against this registry explicitly and download from its storage location instead.
        uri = _registry_download_uri(uri, tracking_uri)
    # The global tracking URI points at `tracking_uri` for the download (and is restored).
    with _use_tracking_uri(tracking_uri) if tracking_uri else nullcontext():
        downloaded = Path(
            download_artifacts(
                artifact_uri=uri, tracking_uri=tracking_uri, registry_uri=tracking_uri
            )
        )
    return ModelBundle.load_dir(bundle_dir_of_model(downloaded))


def _registry_download_uri(model_uri: str, registry_uri: str) -> str:
    """Storage URI of `models:/name@alias` or `models:/name/version` in the given registry."""
    from mlflow.tracking import MlflowClient

    ref = model_uri.removeprefix("models:/").strip("/")
    client = MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)
    if "@" in ref:
        name, _, alias = ref.partition("@")
        version = client.get_model_version_by_alias(name, alias).version
    else:
        name, _, version = ref.rpartition("/")
        if not name or not version.isdigit():
            raise ValueError(
                f"{model_uri!r}: expected models:/<name>@<alias> or models:/<name>/<n>"
            )
    return str(client.get_model_version_download_uri(name, str(version)))
