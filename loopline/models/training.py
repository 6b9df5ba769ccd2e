"""Fit a bundle from a labelled sensor DataFrame: primary, core-sensor fallback and baseline.

Everything is seeded from `TrainingParams.seed` (weight init, shuffling, the calibration
split), so the same data and params give the same model on the same machine.

Which columns are features and which is the label comes from the data set's registered roles
(`DatasetRoles`), never from the names of the generated data.

- Anomaly detection trains the autoencoder on normal rows only (the anomaly flag 0 or false);
  a held-out part of those rows calibrates the threshold as the `threshold_quantile` of
  reconstruction error, so the false-alarm rate on normal data is about
  `1 - threshold_quantile`, or, with a false-alarm budget (`AlarmPolicy`), so that the rate
  stays within it with 95 % confidence (`loopline.models.calibration`). Both baselines are
  calibrated on the same rows the same way.
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

from loopline.models.baseline import ClassRangeBaseline, RangeBaseline
from loopline.models.baseline_rows import Detector, calibrate_rows, newest_per_entity
from loopline.models.bundle import ModelBundle, Scorer
from loopline.models.calibration import threshold
from loopline.models.evaluation_split import label_values, normal_rows
from loopline.models.nets import autoencoder_config, build_network, classifier_config
from loopline.models.pca_baseline import PcaBaseline
from loopline.models.score_baseline import BASELINE_KEY, BaselineCalibration, calibrate
from loopline.models.standardize import Standardizer
from loopline.models.windowing import window_feature_names, window_features, windows_of
from loopline.types.alarms import AlarmPolicy
from loopline.types.common import Task
from loopline.types.dataset import ROLES_KEY, DatasetRoles, LabelKind
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


def class_indices(labels: pd.Series, class_names: list[str], label: str = "label") -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    text = label_values(labels)
    unknown = sorted(set(text.unique()) - set(index))
    if unknown:
        raise TrainingDataError(
            f"column {label!r} has classes {unknown} the model does not know ({class_names})"
        )
    return text.map(index).to_numpy(dtype=np.int64)


def class_names_of(df: pd.DataFrame, roles: DatasetRoles) -> list[str]:
    """The classes a classifier predicts: the declared ones, else those in `df`, sorted."""
    if roles.classes:
        return list(roles.classes)
    return sorted(set(label_values(df[roles.label].dropna())))


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
    df: pd.DataFrame,
    names: list[str],
    params: TrainingParams,
    roles: DatasetRoles,
    alarms: AlarmPolicy,
) -> tuple[
    Scorer, tuple[RangeBaseline, PcaBaseline], list[float], int, dict[str, BaselineCalibration]
]:
    if alarms.baseline_readings is not None:
        df = df.reset_index(drop=True)  # held-out rows are named by index label
    normal = _complete(df[normal_rows(df, roles)], names)
    if len(normal) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(normal)} normal rows ({roles.label} = 0) with all of {names} present; "
            "need at least "
            f"{MIN_TRAINING_ROWS} to train the autoencoder"
        )
    x = normal[names].to_numpy(dtype=np.float32)
    held = np.zeros(len(x), dtype=bool)
    if alarms.baseline_readings is None:  # a random fifth, the fit rows in shuffled order
        rng = np.random.default_rng(params.seed)
        perm = rng.permutation(len(x))
        n_cal = max(1, int(len(x) * CALIBRATION_FRACTION))
        held[perm[:n_cal]] = True
        x_cal, x_fit = x[perm[:n_cal]], x[perm[n_cal:]]
    else:  # the newest normal readings of each entity, what serving sees next
        held = newest_per_entity(normal, roles, CALIBRATION_FRACTION)
        x_cal, x_fit = x[held], x[~held]
    scaler = Standardizer.fit(x_fit)
    torch.manual_seed(params.seed)
    config = autoencoder_config(len(names), params.hidden_units, params.latent_dim)
    net = build_network(config)
    history = _fit_net(net, scaler.transform(x_fit), None, params)
    scorer = Scorer.from_network(feature_names=list(names), scaler=scaler, config=config, net=net)
    errors = scorer.reconstruction_error(x_cal)
    q, budget = params.threshold_quantile, alarms.max_false_alarm_rate
    scorer.threshold = threshold(errors, q, budget)
    baseline = RangeBaseline.fit(x_fit, x_cal, q, budget)
    pca = PcaBaseline.fit(x_fit, x_cal, q, budget)
    calibrations: dict[str, BaselineCalibration] = {}
    if alarms.baseline_readings is not None:
        detectors: dict[str, Detector] = {
            "": (scorer.reconstruction_error, scorer.threshold),
            "baseline": (baseline.score, baseline.threshold),
            "pca": (pca.score, pca.threshold),
        }
        calibrations = calibrate_rows(
            df, names, roles, normal.index[held], alarms, params.threshold_quantile, detectors
        )
    return scorer, (baseline, pca), history, len(x_fit), calibrations


def _window_autoencoder(
    df: pd.DataFrame,
    names: list[str],
    params: TrainingParams,
    roles: DatasetRoles,
    alarms: AlarmPolicy,
) -> tuple[Scorer, list[float], int, BaselineCalibration | None]:
    """The window detector: the dense autoencoder over rolling-window features of each
    entity's last `window_size` readings, trained on windows of normal rows only.

    The threshold is calibrated on the newest fifth of each entity's normal windows (a
    hold-out in time: random windows would share readings with the training ones and set
    it too low)."""
    size = params.window_size
    missing = [c for c in (roles.entity, roles.timestamp) if c not in df.columns]
    if missing:
        raise TrainingDataError(
            f"training.detector 'window' needs the entity and timestamp columns {missing} "
            "to put each entity's readings in order"
        )
    ordered = df.sort_values([roles.entity, roles.timestamp], kind="stable")
    entities = ordered[roles.entity].to_numpy()
    x = ordered[names].to_numpy(dtype=np.float32)
    wins, full = windows_of(list(entities), x, size)
    normal = normal_rows(ordered, roles).to_numpy(dtype=np.float64)
    # a window of normal readings: all its flags 1 (one not yet full holds NaN: not > 0)
    keep = full & (windows_of(list(entities), normal[:, np.newaxis], size)[0].min(axis=1) > 0)
    if keep.sum() < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {int(keep.sum())} windows of {size} normal readings with all of {names} "
            f"present; need at least {MIN_TRAINING_ROWS} (lower training.windowSize)"
        )
    rank = pd.Series(keep).groupby(entities).cumsum().to_numpy()
    total = pd.Series(keep).groupby(entities).transform("sum").to_numpy()
    # the newest fifth of each entity's kept windows, at least its newest one
    cal = keep & (rank > total * (1 - CALIBRATION_FRACTION))
    w_fit = window_features(wins[keep & ~cal], len(names))
    w_cal = window_features(wins[cal], len(names))
    scaler = Standardizer.fit(w_fit)
    torch.manual_seed(params.seed)
    config = autoencoder_config(3 * len(names), params.hidden_units, params.latent_dim)
    net = build_network(config)
    history = _fit_net(net, scaler.transform(w_fit), None, params)
    scorer = Scorer.from_network(
        feature_names=window_feature_names(names, size), scaler=scaler, config=config, net=net
    )
    errors = scorer.reconstruction_error(w_cal)
    scorer.threshold = threshold(errors, params.threshold_quantile, alarms.max_false_alarm_rate)
    calibration = None
    if alarms.baseline_readings is not None:
        u = scorer.reconstruction_error(window_features(wins[full], len(names))) / scorer.threshold
        calibration = calibrate(
            entities[full],
            u,
            cal[full],
            alarms.baseline_readings,
            params.threshold_quantile,
            alarms.max_false_alarm_rate,
        )
    return scorer, history, len(w_fit), calibration


def _classifier(
    df: pd.DataFrame,
    names: list[str],
    params: TrainingParams,
    class_names: list[str],
    label: str,
) -> tuple[Scorer, ClassRangeBaseline, list[float], int]:
    rows = _complete(df[df[label].notna()], names)
    if len(rows) < MIN_TRAINING_ROWS:
        raise TrainingDataError(
            f"only {len(rows)} rows with all of {names} present; need at least "
            f"{MIN_TRAINING_ROWS} to train the classifier"
        )
    x = rows[names].to_numpy(dtype=np.float32)
    y = class_indices(rows[label], class_names, label)
    counts = np.bincount(y, minlength=len(class_names)).astype(np.float64)
    present = counts > 0
    if present.sum() < 2:
        raise TrainingDataError(
            f"column {label!r} has a single class in the training window; "
            "classification needs at least two (widen the window)"
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
    roles: DatasetRoles,
    *,
    class_names: list[str] | None = None,
    alarms: AlarmPolicy | None = None,
) -> TrainedBundle:
    """Train primary and fallback models (and the baseline) of `task` on labelled rows.

    `roles` says which columns are the features, the core features and the label; it is
    recorded in the bundle (`metadata["roles"]`, with the class names of a classifier) so that
    serving and the monitor name their inputs after the data set. `class_names` (a classifier's
    outputs) default to the declared classes, else those in `df`. `alarms` (anomaly
    detection): a false-alarm budget replaces `params.threshold_quantile` for every threshold.
    """
    alarms = alarms or AlarmPolicy()
    if roles.label_kind != LabelKind.for_task(task):
        raise TrainingDataError(
            f"{task} trains on a label of kind {LabelKind.for_task(task)!s}; "
            f"{roles.label!r} is a {roles.label_kind!s} label"
        )
    names, core = list(roles.features), list(roles.core_features)
    if not core:
        raise TrainingDataError(
            "no core features: the fallback model needs some (register them with --core)"
        )
    missing = [c for c in [*names, roles.label] if c not in df.columns]
    if missing:
        raise TrainingDataError(
            f"training data lacks column(s) {missing}; it has {list(df.columns)}"
        )
    start = time.perf_counter()
    baseline: RangeBaseline | ClassRangeBaseline
    extra: dict[str, Any] = {}
    window: Scorer | None = None
    history: dict[str, list[float]] = {}
    rows: dict[str, int] = {}
    if task == Task.ANOMALY_DETECTION:
        primary, (baseline, pca), h_primary, n_primary, calibrations = _autoencoder(
            df, names, params, roles, alarms
        )
        extra |= {"pca_baseline": pca.to_dict(), "alarms": alarms.model_dump(by_alias=True)}
        fallback, _, h_fallback, n_fallback, of_fallback = _autoencoder(
            df, core, params, roles, alarms
        )
        recorded = roles.model_copy(update={"classes": []})
        if params.detector == "window":
            window, history["window"], rows["window"], of_window = _window_autoencoder(
                df, names, params, roles, alarms
            )
            if of_window is not None:
                calibrations["window"] = of_window
        if alarms.baseline_readings is not None:
            calibrations["dense"] = calibrations.pop("")
            calibrations["fallback"] = of_fallback[""]
            extra[BASELINE_KEY] = {
                "readings": alarms.baseline_readings,
                "detectors": {k: c.to_dict() for k, c in calibrations.items()},
            }
    else:
        classes = list(class_names) if class_names is not None else class_names_of(df, roles)
        primary, baseline, h_primary, n_primary = _classifier(
            df, names, params, classes, roles.label
        )
        fallback, _, h_fallback, n_fallback = _classifier(df, core, params, classes, roles.label)
        recorded = roles.model_copy(update={"classes": classes})
    metadata: dict[str, Any] = {
        ROLES_KEY: recorded.model_dump(mode="json"),
        "baseline": baseline.to_dict(),
        **extra,
        "params": params.model_dump(mode="json", by_alias=True),
        "training_rows": {"primary": n_primary, "fallback": n_fallback, **rows},
    }
    bundle = ModelBundle(
        task=task,
        primary=primary,
        fallback=fallback,
        metadata=metadata,
        window=window,
        window_size=params.window_size if window is not None else 1,
    )
    return TrainedBundle(
        bundle=bundle,
        history={"primary": h_primary, "fallback": h_fallback, **history},
        rows={"primary": n_primary, "fallback": n_fallback, **rows},
        seconds=time.perf_counter() - start,
    )
