"""The model bundle: what a training run produces and what serving and the monitor load.

One bundle holds the primary network (all sensors) and the fallback network (core sensors
only), each with its own scaler and, for anomaly detection, its calibrated threshold. On disk
it is a folder (`bundle.json` + one weights file per network); in MLflow it is the `bundle`
artifact of one pyfunc model (see `loopline.models.pyfunc`). `load_bundle` accepts either a
local bundle folder or any MLflow model URI (`models:/name@champion`, `runs:/…`).

Format 2 (written since the runtime image dropped torch) stores each network's dense layers as
a numpy `.npz` of float32 arrays, so the model server and the drift monitor load and score a
bundle with numpy alone: torch is a training dependency (the `training` extra), and the
runtime image without it is a few GB smaller. Format 1 (torch `state_dict` files) is what
versions registered before that hold; it still loads where torch is importable.

`score()` is the hot path of the model server: numpy in, numpy out, no pandas. The networks
are small dense stacks (Linear and ReLU) trained with torch; scoring runs the same weights in
one compiled call (`dense_kernel.PackedStack`), because at the batch sizes a line sends
torch's per-operator dispatch, and even numpy's (`DenseStack`, the reference), costs several
times the arithmetic. Training, the pyfunc and the server all score through this one path,
and unit tests hold it to numpy's and the torch module's outputs.

Size: the format-2 reader/writer and the format-1 loader live together until format 1 goes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loopline.models.dense_kernel import PackedStack
from loopline.models.nets import AUTOENCODER, CLASSIFIER
from loopline.models.standardize import Standardizer
from loopline.types.common import Task
from loopline.types.dataset import ROLES_KEY, DatasetRoles

if TYPE_CHECKING:  # torch is a training dependency; serving never imports it
    from torch import nn

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 2
TORCH_FORMAT = 1  # state_dict files: readable only where torch is installed
READABLE_FORMATS = (TORCH_FORMAT, BUNDLE_FORMAT)
ARTIFACT_KEY = "bundle"  # key of the bundle folder among the pyfunc's artifacts
WEIGHTS_SUFFIX = ".npz"
TRAINING_EXTRA_HINT = (
    "install torch (the training image has it; elsewhere `pip install 'loopline[training]'`)"
)


class BundleError(ValueError):
    """A bundle is malformed or an input does not fit it; the message names what is wrong."""


@dataclass(frozen=True)
class DenseStack:
    """A `Sequential` of `Linear` and `ReLU` layers as numpy arrays, for inference."""

    layers: tuple[tuple[np.ndarray, np.ndarray, bool], ...]  # (weight.T, bias, relu after)

    @classmethod
    def of(cls, net: nn.Module) -> DenseStack:
        """The weights of a torch module (training and tests; needs torch)."""
        from torch import nn

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

    def arrays(self) -> dict[str, np.ndarray]:
        """The layers as named arrays (the `.npz` of bundle format 2).

        `weight_<i>` is layer i's float32 [in, out] matrix (torch's weight transposed, the
        layout the kernel multiplies with), `bias_<i>` its float32 [out], and `relu` one flag
        per layer: whether a ReLU follows it.
        """
        out: dict[str, np.ndarray] = {}
        for i, (weight, bias, _) in enumerate(self.layers):
            out[f"weight_{i}"] = np.ascontiguousarray(weight, dtype=np.float32)
            out[f"bias_{i}"] = np.ascontiguousarray(bias, dtype=np.float32)
        out["relu"] = np.array([relu for _, _, relu in self.layers], dtype=np.bool_)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, what: str) -> DenseStack:
        """Rebuild from `arrays()`'s names; `what` names the file in errors."""
        if "relu" not in arrays:
            raise BundleError(f"{what}: array 'relu' is missing")
        relu = np.asarray(arrays["relu"], dtype=np.bool_)
        if relu.ndim != 1 or relu.size == 0:
            raise BundleError(f"{what}: 'relu' must be one flag per layer, got {relu.shape}")
        layers: list[tuple[np.ndarray, np.ndarray, bool]] = []
        for i in range(relu.size):
            for key in (f"weight_{i}", f"bias_{i}"):
                if key not in arrays:
                    raise BundleError(f"{what}: array {key!r} is missing ({relu.size} layers)")
            weight = np.asarray(arrays[f"weight_{i}"], dtype=np.float32)
            bias = np.asarray(arrays[f"bias_{i}"], dtype=np.float32)
            width = layers[-1][0].shape[1] if layers else weight.shape[0]
            if weight.ndim != 2 or weight.shape[0] != width or bias.shape != weight.shape[1:]:
                raise BundleError(
                    f"{what}: layer {i} has weight {weight.shape} and bias {bias.shape}; "
                    f"expected [{width}, out] and [out]"
                )
            layers.append((weight, bias, bool(relu[i])))
        return cls(tuple(layers))

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(f, **self.arrays())

    @classmethod
    def load(cls, path: Path) -> DenseStack:
        if not path.is_file():
            raise BundleError(f"{path} is missing")
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_arrays({key: data[key] for key in data.files}, str(path))
        except (OSError, ValueError) as exc:
            if isinstance(exc, BundleError):
                raise
            raise BundleError(f"{path} is not a weights file of bundle format 2: {exc}") from exc

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

    Holds the network only as numpy layers (`dense`), so serving needs no torch; training and
    tests make one from a trained torch module with `Scorer.from_network`.
    """

    feature_names: list[str]
    scaler: Standardizer
    config: dict[str, Any]
    dense: DenseStack
    threshold: float | None = None  # anomaly detection only
    class_names: list[str] = field(default_factory=list)  # classification only
    kernel: PackedStack = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.kernel = PackedStack.of(self.scaler.mean, self.scaler.scale, self.dense.layers)
        except ValueError as exc:
            raise BundleError(f"network and scaler do not fit together: {exc}") from exc
        if self.kernel.dims[0] != len(self.feature_names):
            raise BundleError(
                f"network takes {self.kernel.dims[0]} inputs; the scorer has "
                f"{len(self.feature_names)} features {self.feature_names}"
            )

    @classmethod
    def from_network(
        cls,
        *,
        feature_names: list[str],
        scaler: Standardizer,
        config: dict[str, Any],
        net: nn.Module,
        threshold: float | None = None,
        class_names: list[str] | None = None,
    ) -> Scorer:
        """A scorer of a trained torch module's current weights (the module is not kept)."""
        return cls(
            feature_names=feature_names,
            scaler=scaler,
            config=config,
            dense=DenseStack.of(net),
            threshold=threshold,
            class_names=list(class_names or []),
        )

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
    def from_dict(cls, data: dict[str, Any], folder: Path, *, bundle_format: int) -> Scorer:
        weights = folder / str(data["weights"])
        if bundle_format == TORCH_FORMAT:
            dense = _dense_of_state_dict(data["network"], weights)
        else:
            dense = DenseStack.load(weights)
        return cls(
            feature_names=list(data["feature_names"]),
            scaler=Standardizer.from_dict(data["scaler"]),
            config=dict(data["network"]),
            dense=dense,
            threshold=None if data.get("threshold") is None else float(data["threshold"]),
            class_names=list(data.get("class_names") or []),
        )


def _dense_of_state_dict(config: dict[str, Any], path: Path) -> DenseStack:
    """The layers of a format-1 `state_dict` file, read with torch (imported only here)."""
    try:
        import torch

        from loopline.models.nets import load_network
    except ImportError as exc:
        raise BundleError(
            f"{path.parent} is a bundle of format {TORCH_FORMAT} (torch state_dict files), "
            f"which needs torch to read and torch is not importable here ({exc}). Either "
            f"{TRAINING_EXTRA_HINT}, or convert it once where torch is installed: "
            "`ModelBundle.load_dir(folder).save(new_folder)` writes format "
            f"{BUNDLE_FORMAT}, which loads with numpy alone"
        ) from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    return DenseStack.of(load_network(config, state))


@dataclass
class ModelBundle:
    """Primary and fallback scorers of one task, with the names serving needs to map inputs."""

    task: Task
    primary: Scorer
    fallback: Scorer
    metadata: dict[str, Any] = field(default_factory=dict)
    # the window detector (`loopline.models.windowing`); None: the per-row (dense) one
    window: Scorer | None = None
    window_size: int = 1  # readings per window (1: the dense detector)

    def __post_init__(self) -> None:
        expected = AUTOENCODER if self.task == Task.ANOMALY_DETECTION else CLASSIFIER
        for role, scorer in (("primary", self.primary), ("fallback", self.fallback)):
            if scorer.kind != expected:
                raise BundleError(f"{role}: a {self.task} bundle needs a {expected} network")
        if self.window is not None:
            width, n = len(self.window.feature_names), len(self.primary.feature_names)
            if self.window.kind != AUTOENCODER or width != 3 * n or self.window_size < 2:
                raise BundleError(
                    f"window: needs an autoencoder over 3 x {n} window features and a "
                    f"size of at least 2, got {width} inputs and size {self.window_size}"
                )

    @property
    def detector(self) -> str:
        """'window' or 'dense' (a bundle written before the window detector is dense)."""
        return "dense" if self.window is None else "window"
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
    def roles(self) -> DatasetRoles | None:
        """The data set's column roles this bundle was trained with (entity, timestamp,
        features, core features, label and its kind, classes); None for a bundle trained
        before they were recorded. `BundleError` if the record is malformed."""
        doc = self.metadata.get(ROLES_KEY)
        if doc is None:
            return None
        try:
            return DatasetRoles.model_validate(doc)
        except ValueError as exc:
            raise BundleError(f"bundle metadata {ROLES_KEY!r} is malformed: {exc}") from exc

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
        if self.window is not None:
            self.window.warm_up()

    def save(self, folder: Path) -> Path:
        """Write format 2: `bundle.json` and one `.npz` of numpy arrays per network."""
        folder.mkdir(parents=True, exist_ok=True)
        doc: dict[str, Any] = {"format": BUNDLE_FORMAT, "task": str(self.task)}
        for role, scorer in (("primary", self.primary), ("fallback", self.fallback)):
            scorer.dense.save(folder / f"{role}{WEIGHTS_SUFFIX}")
            doc[role] = scorer.to_dict(f"{role}{WEIGHTS_SUFFIX}")
        doc["detector"] = self.detector
        if self.window is not None:
            self.window.dense.save(folder / f"window{WEIGHTS_SUFFIX}")
            doc["window"] = self.window.to_dict(f"window{WEIGHTS_SUFFIX}")
            doc["window"]["size"] = self.window_size
        doc["metadata"] = self.metadata
        (folder / BUNDLE_FILE).write_text(json.dumps(doc, indent=2) + "\n")
        return folder

    @classmethod
    def load_dir(cls, folder: Path) -> ModelBundle:
        path = folder / BUNDLE_FILE
        if not path.is_file():
            raise BundleError(f"{folder} is not a model bundle: {BUNDLE_FILE} is missing")
        doc = json.loads(path.read_text())
        version = doc.get("format")
        if version not in READABLE_FORMATS:
            raise BundleError(
                f"{path}: format {version!r}; this Loopline reads formats "
                f"{list(READABLE_FORMATS)} (a newer bundle needs a newer Loopline)"
            )
        detector = doc.get("detector", "dense")
        if detector not in ("dense", "window") or (detector == "window") != ("window" in doc):
            raise BundleError(
                f"{path}: detector {detector!r} must be 'dense' or 'window', and 'window' "
                "needs the window network (key 'window')"
            )
        window = doc.get("window")
        return cls(
            task=Task(doc["task"]),
            primary=Scorer.from_dict(doc["primary"], folder, bundle_format=version),
            fallback=Scorer.from_dict(doc["fallback"], folder, bundle_format=version),
            metadata=dict(doc.get("metadata") or {}),
            window=None if window is None else Scorer.from_dict(window, folder, bundle_format=2),
            window_size=1 if window is None else int(window.get("size", 0)),
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


def set_torch_threads(threads: int | None) -> None:
    """Set torch's intra-op threads if torch is already loaded in this process (None: leave it).

    Scoring never runs torch, but a process that trained or read a format-1 bundle has it
    loaded, and one thread is right for these small networks: on a busy 2-core machine
    torch's default of one thread per core made them 10-30x slower in wall time
    (benchmarks/bench_training.py). Never imports torch: the runtime image has none.
    """
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None:
        torch.set_num_threads(threads)


def load_bundle(
    model_uri: str | Path,
    *,
    tracking_uri: str | None = None,
    torch_threads: int | None = INFERENCE_THREADS,
) -> ModelBundle:
    """Load a bundle from a local folder or an MLflow model URI (`models:/name@champion`).

    Reads the bundle files directly instead of going through `mlflow.pyfunc.load_model`, so
    serving gets the numpy API without pandas and without MLflow's environment checks.
    `torch_threads`: see `set_torch_threads` (applied after loading, as a format-1 bundle
    loads torch).
    """
    bundle = _load_bundle(model_uri, tracking_uri=tracking_uri)
    set_torch_threads(torch_threads)
    return bundle


def _load_bundle(model_uri: str | Path, *, tracking_uri: str | None) -> ModelBundle:
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
