"""Fit a bundle from a labelled sensor DataFrame: primary, core-sensor fallback and baseline.

Everything is seeded from `TrainingParams.seed` (weight init, shuffling, the calibration
split), so the same data and params give the same model on the same machine.

- Anomaly detection trains the autoencoder on normal rows only (`is_fault == 0`); a held-out
  part of those rows calibrates the threshold as the `threshold_quantile` of reconstruction
  error, so the false-alarm rate on normal data is about `1 - threshold_quantile`.
- Classification trains on every labelled row with class weights inversely proportional to
  class frequency, because faults are rare and a classifier would otherwise learn "none".
Rows with a NaN in a model's input columns are left out of that model's training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from loopline.data.schema import CORE_SENSORS, FAULT_TYPE, FAULT_TYPES, IS_FAULT, SENSORS, TIMESTAMP
from loopline.models.baseline import ClassRangeBaseline, RangeBaseline
from loopline.models.bundle import ModelBundle, Scorer
from loopline.models.nets import autoencoder_config, build_network, classifier_config
from loopline.models.standardize import Standardizer
from loopline.types.common import Task
from loopline.types.policy import TrainingParams

CALIBRATION_FRACTION = 0.2
MIN_TRAINING_ROWS = 50


class TrainingDataError(ValueError):
    """The training data cannot train this task; the message says what is missing."""


@dataclass
class TrainedBundle:
    bundle: ModelBundle
    history: dict[str, list[float]] = field(default_factory=dict)  # loss per epoch per network
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def split_by_time(
    df: pd.DataFrame, eval_fraction: float = 0.2, timestamp: str = TIMESTAMP
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the older rows, evaluate on the newest `eval_fraction` (a fresh period)."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    if timestamp not in df.columns:
        raise TrainingDataError(f"column {timestamp!r} is missing; cannot split by time")
    ordered = df.sort_values(timestamp, kind="stable")
    cut = ordered[timestamp].quantile(1 - eval_fraction)
    return ordered[ordered[timestamp] < cut], ordered[ordered[timestamp] >= cut]


def class_indices(labels: pd.Series, class_names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(set(labels.unique()) - set(index))
    if unknown:
        raise TrainingDataError(f"column {FAULT_TYPE!r} has unknown classes {unknown}")
    return labels.map(index).to_numpy(dtype=np.int64)


def _complete(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return df[df[names].notna().all(axis=1)]


def _fit_net(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray | None,
    params: TrainingParams,
    class_weights: np.ndarray | None = None,
) -> list[float]:
    """Mini-batch Adam; reconstructs `x` when `y` is None, else weighted cross-entropy."""
    rng = np.random.default_rng(params.seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = None if y is None else torch.from_numpy(y)
    loss_fn: nn.Module = (
        nn.MSELoss()
        if y is None
        else nn.CrossEntropyLoss(
            weight=None if class_weights is None else torch.from_numpy(class_weights)
        )
    )
    opt = torch.optim.Adam(net.parameters(), lr=params.learning_rate)
    history: list[float] = []
    net.train()
    with single_threaded():
        for _ in range(params.epochs):
            history.append(_epoch(net, opt, loss_fn, xt, yt, rng, params.batch_size))
    net.eval()
    return history


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one intra-op thread, restoring the setting afterwards.

    These networks are a few dozen units wide: splitting a 256 x 32 matmul across threads
    costs more in synchronisation than it saves, and on a shared machine spinning threads
    compete with everyone else. Measured in benchmarks/bench_training.py.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    xt: torch.Tensor,
    yt: torch.Tensor | None,
    rng: np.random.Generator,
    batch_size: int,
) -> float:
    order = torch.from_numpy(rng.permutation(len(xt)))
    total = 0.0
    for start in range(0, len(xt), batch_size):
        idx = order[start : start + batch_size]
        xb = xt[idx]
        out = net(xb)
        loss = loss_fn(out, xb) if yt is None else loss_fn(out, yt[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(xt)


def _autoencoder(
    df: pd.DataFrame, names: list[str], params: TrainingParams
) -> tuple[Scorer, RangeBaseline, list[float], int]:
    normal = _complete(df[df[IS_FAULT] == 0], names)
    if len(normal) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(normal)} normal rows with all of {names} present; need at least "
            f"{MIN_TRAINING_ROWS} to train the autoencoder"
        )
    x = normal[names].to_numpy(dtype=np.float32)
    rng = np.random.default_rng(params.seed)
    perm = rng.permutation(len(x))
    n_cal = max(1, int(len(x) * CALIBRATION_FRACTION))
    x_cal, x_fit = x[perm[:n_cal]], x[perm[n_cal:]]
    scaler = Standardizer.fit(x_fit)
    torch.manual_seed(params.seed)
    config = autoencoder_config(len(names), params.hidden_units, params.latent_dim)
    net = build_network(config)
    history = _fit_net(net, scaler.transform(x_fit), None, params)
    scorer = Scorer.from_network(feature_names=list(names), scaler=scaler, config=config, net=net)
    errors = scorer.reconstruction_error(x_cal)
    scorer.threshold = float(np.quantile(errors, params.threshold_quantile))
    baseline = RangeBaseline.fit(x_fit, x_cal, params.threshold_quantile)
    return scorer, baseline, history, len(x_fit)


def _classifier(
    df: pd.DataFrame, names: list[str], params: TrainingParams, class_names: list[str]
) -> tuple[Scorer, ClassRangeBaseline, list[float], int]:
    rows = _complete(df, names)
    if len(rows) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(rows)} rows with all of {names} present; need at least "
            f"{MIN_TRAINING_ROWS} to train the classifier"
        )
    x = rows[names].to_numpy(dtype=np.float32)
    y = class_indices(rows[FAULT_TYPE], class_names)
    counts = np.bincount(y, minlength=len(class_names)).astype(np.float64)
    present = counts > 0
    if present.sum() < 2:
        raise TrainingDataError(
            f"column {FAULT_TYPE!r} has a single class in the training window; "
            "classification needs labelled faults (widen the window)"
        )
    weights = np.zeros(len(class_names), dtype=np.float32)
    weights[present] = (len(y) / (present.sum() * counts[present])).astype(np.float32)
    scaler = Standardizer.fit(x)
    torch.manual_seed(params.seed)
    config = classifier_config(len(names), params.hidden_units, len(class_names))
    net = build_network(config)
    history = _fit_net(net, scaler.transform(x), y, params, class_weights=weights)
    scorer = Scorer.from_network(
        feature_names=list(names),
        scaler=scaler,
        config=config,
        net=net,
        class_names=list(class_names),
    )
    return scorer, ClassRangeBaseline.fit(x, y, len(class_names)), history, len(x)


def train_bundle(
    df: pd.DataFrame,
    task: Task,
    params: TrainingParams,
    *,
    feature_names: list[str] | tuple[str, ...] = SENSORS,
    core_feature_names: list[str] | tuple[str, ...] = CORE_SENSORS,
    class_names: list[str] | tuple[str, ...] = FAULT_TYPES,
) -> TrainedBundle:
    """Train primary and fallback models (and the baseline) of `task` on labelled rows."""
    names, core = list(feature_names), list(core_feature_names)
    needed = [*names, IS_FAULT] if task == Task.ANOMALY_DETECTION else [*names, FAULT_TYPE]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise TrainingDataError(f"training data lacks column(s) {missing}")
    start = time.perf_counter()
    baseline: RangeBaseline | ClassRangeBaseline
    if task == Task.ANOMALY_DETECTION:
        primary, baseline, h_primary, n_primary = _autoencoder(df, names, params)
        fallback, _, h_fallback, n_fallback = _autoencoder(df, core, params)
    else:
        primary, baseline, h_primary, n_primary = _classifier(df, names, params, list(class_names))
        fallback, _, h_fallback, n_fallback = _classifier(df, core, params, list(class_names))
    metadata: dict[str, Any] = {
        "baseline": baseline.to_dict(),
        "params": params.model_dump(mode="json", by_alias=True),
        "training_rows": {"primary": n_primary, "fallback": n_fallback},
    }
    bundle = ModelBundle(task=task, primary=primary, fallback=fallback, metadata=metadata)
    return TrainedBundle(
        bundle=bundle,
        history={"primary": h_primary, "fallback": h_fallback},
        rows={"primary": n_primary, "fallback": n_fallback},
        seconds=time.perf_counter() - start,
    )
