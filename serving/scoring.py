"""Score a decoded batch with the primary and fallback models and encode the V2 outputs.

Rows with every sensor go to the bundle's primary model, rows with a missing non-core sensor to
its core-sensor fallback, in the same request; the answers are merged back in request order
with a per-row `model` column ("primary" | "fallback"). The bundle is anything with the shape
of `loopline.models.bundle.ModelBundle`; `Scorer` spells out the part
the server uses so this module needs no MLflow to import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from mlserver.types import MetadataTensor, ResponseOutput

from loopline.serving.payload import FeatureLayout, fallback_rows, refuse_missing

PRIMARY = "primary"
FALLBACK = "fallback"
ANOMALY_TASK = "anomaly-detection"
CLASSIFICATION_TASK = "classification"

# name -> (V2 datatype, extra dims after n). The order is the order of the response outputs.
_OUTPUTS: dict[str, dict[str, tuple[str, int]]] = {
    ANOMALY_TASK: {
        "anomaly_score": ("FP32", 0),
        "threshold": ("FP32", 0),
        "is_anomaly": ("BOOL", 0),
    },
    CLASSIFICATION_TASK: {
        "class_index": ("INT64", 0),
        "class_name": ("BYTES", 0),
        "probabilities": ("FP32", 1),
    },
}
MODEL_OUTPUT = "model"
_PRIMARY_B = PRIMARY.encode()
_FALLBACK_B = FALLBACK.encode()
VERSION_OUTPUT = "model_version"
STATE_OUTPUT = "model_state"  # ok | stale | unknown (`drift_state`)
ALARM_OUTPUT = "alarm_event"  # active | inactive (`alarm_events`), anomaly detection only
_NUMPY_TYPES = {
    "FP32": np.dtype(np.float32),
    "BOOL": np.dtype(np.bool_),
    "INT64": np.dtype(np.int64),
}


class Scorer(Protocol):
    """The part of `ModelBundle` the server calls."""

    @property
    def task(self) -> str: ...

    @property
    def feature_names(self) -> list[str]: ...

    @property
    def core_feature_names(self) -> list[str]: ...

    @property
    def class_names(self) -> list[str]: ...

    def score(self, x: np.ndarray) -> dict[str, np.ndarray]: ...

    def score_fallback(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass
class ScoredBatch:
    """Per-row answers in request order."""

    outputs: dict[str, np.ndarray]
    fallback: np.ndarray  # bool [n]
    n_fallback: int = -1  # how many of `fallback` are set (-1: count them)
    # BYTES columns the runtime adds after scoring (model_state, alarm_event), in order
    labels: dict[str, list[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_fallback < 0:
            self.n_fallback = int(np.count_nonzero(self.fallback))

    @property
    def rows(self) -> int:
        return int(self.fallback.shape[0])


def output_names(task: str) -> list[str]:
    if task not in _OUTPUTS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_OUTPUTS)}")
    return list(_OUTPUTS[task])


def score_batch(
    scorer: Scorer,
    x: np.ndarray,
    layout: FeatureLayout,
    *,
    complete: bool = False,
    allow_fallback: bool = True,
) -> ScoredBatch:
    """Score float32 [n, F]; rows with a missing non-core sensor go to the fallback model, or,
    with `allow_fallback=False`, make the whole request a 422 naming the sensors.

    `complete=True` is the caller's word that every value of `x` is finite (decoding checks
    it in one pass), so no row needs the fallback and the split is skipped."""
    names = output_names(scorer.task)
    if complete:
        use_fallback = np.zeros(x.shape[0], dtype=bool)
        n_fallback = 0
    else:
        use_fallback = fallback_rows(x, layout)
        n_fallback = int(np.count_nonzero(use_fallback))
        if n_fallback and not allow_fallback:
            raise refuse_missing(x, layout, use_fallback)
    if n_fallback == 0:
        out = scorer.score(x)
    elif n_fallback == x.shape[0]:
        out = scorer.score_fallback(np.ascontiguousarray(x[:, layout.core_idx]))
    else:
        primary = scorer.score(x[~use_fallback])
        fallback = scorer.score_fallback(np.ascontiguousarray(x[use_fallback][:, layout.core_idx]))
        out = {}
        for name in names:
            p, f = np.asarray(primary[name]), np.asarray(fallback[name])
            merged = np.empty((x.shape[0], *p.shape[1:]), dtype=np.result_type(p, f))
            merged[~use_fallback] = p
            merged[use_fallback] = f
            out[name] = merged
    missing = [name for name in names if name not in out]
    if missing:
        raise RuntimeError(f"model returned no {missing} (got {sorted(out)})")
    return ScoredBatch(
        outputs={name: np.asarray(out[name]) for name in names},
        fallback=use_fallback,
        n_fallback=n_fallback,
    )


@dataclass(frozen=True)
class OutputColumn:
    """One V2 output before any wire format: flat row-major data; BYTES as bytes."""

    name: str
    datatype: str
    shape: list[int]
    data: list[object]


def output_columns(scored: ScoredBatch, task: str, version: str) -> list[OutputColumn]:
    """The outputs of a scored batch, flat row-major so MLServer's adaptive batching can
    split them; the wire encoders (`encode_outputs`, `v2_json`) only wrap them."""
    n = scored.rows
    result = []
    for name, (datatype, extra_dims) in _OUTPUTS[task].items():
        arr = scored.outputs[name]
        shape = [n, *arr.shape[1:]] if extra_dims else [n]
        if arr.ndim != 1:
            arr = arr.reshape(-1)
        data: list[object]
        if datatype == "BYTES":
            data = [str(v).encode() for v in arr.tolist()]
        else:
            dtype = _NUMPY_TYPES[datatype]
            values: list[Any] = (arr if arr.dtype == dtype else arr.astype(dtype)).tolist()
            # JSON has no NaN: null, as MLServer's own codec does. The sum is NaN if any value
            # is (or if +inf meets -inf; the pass then changes nothing).
            if datatype == "FP32" and math.isnan(sum(values)):
                values = [None if v != v else v for v in values]
            data = values
        result.append(OutputColumn(name, datatype, shape, data))
    # BYTES as bytes: gRPC's bytes_contents needs them; REST renders them as JSON strings.
    labels: list[object] = (
        [_PRIMARY_B] * n
        if scored.n_fallback == 0
        else [_FALLBACK_B if f else _PRIMARY_B for f in scored.fallback.tolist()]
    )
    result.append(OutputColumn(MODEL_OUTPUT, "BYTES", [n], labels))
    result.append(OutputColumn(VERSION_OUTPUT, "BYTES", [n], [version.encode()] * n))
    for name, column in scored.labels.items():
        result.append(OutputColumn(name, "BYTES", [n], list(column)))
    return result


def encode_outputs(scored: ScoredBatch, task: str, version: str) -> list[ResponseOutput]:
    """V2 outputs as MLServer's types (what `predict` returns to MLServer)."""
    return [
        ResponseOutput(name=c.name, datatype=c.datatype, shape=c.shape, data=c.data)
        for c in output_columns(scored, task, version)
    ]


def metadata_outputs(task: str, n_classes: int) -> list[MetadataTensor]:
    """Output tensors as `GET /v2/models/{name}` lists them."""
    tensors = []
    for name, (datatype, extra_dims) in _OUTPUTS[task].items():
        shape = [-1, n_classes] if extra_dims else [-1]
        tensors.append(MetadataTensor(name=name, datatype=datatype, shape=shape))
    tensors.append(MetadataTensor(name=MODEL_OUTPUT, datatype="BYTES", shape=[-1]))
    tensors.append(MetadataTensor(name=VERSION_OUTPUT, datatype="BYTES", shape=[-1]))
    tensors.append(MetadataTensor(name=STATE_OUTPUT, datatype="BYTES", shape=[-1]))
    if task == ANOMALY_TASK:
        tensors.append(MetadataTensor(name=ALARM_OUTPUT, datatype="BYTES", shape=[-1]))
    return tensors
