"""Drift tests on one window of live rows against the reference sample, by name.

`ks`: a two-sample Kolmogorov-Smirnov test per feature, Bonferroni or FDR corrected, with the
p-values and corrections of alibi-detect's `KSDrift` (scipy's asymptotic two-sided p-value),
computed by `ks.ks_columns` against a reference sorted once (a window costs a sort of its own
columns, not 16 calls of `ks_2samp` re-sorting the reference). `mmd`: alibi-detect's `MMDDrift`
with the pytorch backend (one multivariate permutation test; needs torch, so not in the runtime
image: `require_detector`). What this module adds is what a monitor on factory sensors needs
around them:

- Missing values are explicit. alibi-detect would turn a NaN into a NaN p-value; here each
  feature is tested on its own non-missing values, the missing ones are counted, and a feature
  with too few values is reported as untested (p-value 1, never NaN).
- An effect-size floor (`min_statistic`): with thousands of rows the KS test also "detects"
  differences nobody would retrain for, so a feature drifts only if it is significant after the
  correction AND its KS distance is at least the floor.
- One result shape for both, naming the drifted features (for MMD, the KS attribution tells a
  person which sensors moved).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .ks import SortedReference, corrected_threshold, ks_columns


@dataclass(frozen=True)
class FeatureTest:
    """The test of one feature in one window."""

    name: str
    p_value: float
    statistic: float
    rows: int
    missing: int
    tested: bool
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """The outcome of testing one window."""

    detector: str
    is_drift: bool
    p_value: float
    threshold: float
    statistic: float
    rows: int
    features: list[FeatureTest]
    duration_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]

    @property
    def p_values(self) -> dict[str, float]:
        return {f.name: f.p_value for f in self.features}


class Detector(Protocol):
    """Tests a window (rows x features, NaN where missing) against the reference."""

    name: str
    feature_names: list[str]

    def test(self, window: np.ndarray) -> DriftResult: ...


def _as_matrix(values: np.ndarray, width: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{what} must have shape [rows, {width}], got {list(arr.shape)}")
    return arr


class DetectorUnavailable(RuntimeError):
    """A detector's backend is not installed here; the message says how to get it."""


# Detectors whose alibi-detect backend needs torch, which the runtime image leaves out (it
# brings GBs of CUDA libraries). KS runs on numpy and scipy alone.
TORCH_DETECTORS = frozenset({"mmd"})


def _torch_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def require_detector(name: str) -> None:
    """Refuse, at configuration time, a detector whose backend is missing in this install.

    A monitor that started and failed only when its first reference loaded would sit there
    dropping samples; this makes `loopline monitor serve` (and `build_monitor`) stop at once.
    """
    if name in TORCH_DETECTORS and not _torch_installed():
        raise DetectorUnavailable(
            f"detector {name!r} needs torch (alibi-detect's pytorch backend), which is not "
            "installed here (the runtime image has none). Use detector 'ks', or run the "
            "monitor from the training image, or `pip install 'loopline[training]'`."
        )


class KSDetector:
    """Per-feature KS with a multiple-testing correction and an effect-size floor."""

    name = "ks"

    def __init__(
        self,
        reference: np.ndarray,
        feature_names: Sequence[str],
        *,
        p_value: float = 0.01,
        correction: str = "bonferroni",
        min_statistic: float = 0.0,
        min_rows: int = 20,
    ) -> None:
        self.feature_names = list(feature_names)
        ref = _as_matrix(reference, len(self.feature_names), "reference")
        self.p_value = p_value
        self.correction = correction
        self.min_statistic = min_statistic
        self.min_rows = min_rows
        if correction not in ("bonferroni", "fdr"):
            raise ValueError(f"correction {correction!r} is unknown; choose bonferroni or fdr")
        self._reference = SortedReference.of(ref)

    def test(self, window: np.ndarray) -> DriftResult:
        start = time.perf_counter()
        x = _as_matrix(window, len(self.feature_names), "window")
        ks = ks_columns(self._reference, x, min_rows=self.min_rows)
        p_vals, dist, rows = ks.p_value, ks.statistic, ks.rows
        threshold = corrected_threshold(p_vals, self.p_value, self.correction)
        drifted = ks.tested & (p_vals <= threshold) & (dist >= self.min_statistic)
        features = [
            FeatureTest(
                name=name,
                p_value=float(p_vals[i]),
                statistic=float(dist[i]),
                rows=int(rows[i]),
                missing=int(x.shape[0] - rows[i]),
                tested=bool(ks.tested[i]),
                drifted=bool(drifted[i]),
            )
            for i, name in enumerate(self.feature_names)
        ]
        return DriftResult(
            detector=self.name,
            is_drift=any(f.drifted for f in features),
            p_value=float(p_vals.min()) if p_vals.size else 1.0,
            threshold=threshold,
            statistic=float(dist.max()) if dist.size else 0.0,
            rows=int(x.shape[0]),
            features=features,
            duration_seconds=time.perf_counter() - start,
        )


class MMDDetector:
    """alibi-detect's MMD permutation test (pytorch backend) on standardized, complete rows.

    Features are standardized with the reference's mean and deviation (sensors differ by orders
    of magnitude; the RBF kernel would see only the largest). Rows with any missing feature are
    left out of the multivariate test. Both sides are subsampled to `max_rows`: the kernel
    matrix grows with the square of the rows. The per-feature KS runs alongside to name which
    sensors moved.
    """

    name = "mmd"

    def __init__(
        self,
        reference: np.ndarray,
        feature_names: Sequence[str],
        *,
        p_value: float = 0.01,
        correction: str = "bonferroni",
        min_statistic: float = 0.0,
        min_rows: int = 20,
        permutations: int = 100,
        max_rows: int = 500,
        seed: int = 0,
    ) -> None:
        from alibi_detect.cd import MMDDrift

        self.feature_names = list(feature_names)
        ref = _as_matrix(reference, len(self.feature_names), "reference")
        complete = ref[np.isfinite(ref).all(axis=1)]
        if complete.shape[0] < min_rows:
            raise ValueError(
                f"reference has {complete.shape[0]} complete rows; MMD needs at least {min_rows}"
            )
        self.min_rows = min_rows
        self.max_rows = max_rows
        self._rng = np.random.default_rng(seed)
        self._mean = complete.mean(axis=0)
        std = complete.std(axis=0)
        self._std = np.where(std > 0, std, 1.0)
        ref_rows = self._subsample(self._standardize(complete))
        self._mmd = MMDDrift(
            ref_rows.astype(np.float32),
            backend="pytorch",
            p_val=p_value,
            n_permutations=permutations,
            device="cpu",
        )
        self._attribution = KSDetector(
            ref,
            self.feature_names,
            p_value=p_value,
            correction=correction,
            min_statistic=min_statistic,
            min_rows=min_rows,
        )
        self.p_value = p_value

    def _standardize(self, x: np.ndarray) -> np.ndarray:
        return (x - self._mean) / self._std

    def _subsample(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] <= self.max_rows:
            return x
        idx = self._rng.choice(x.shape[0], size=self.max_rows, replace=False)
        return x[np.sort(idx)]

    def test(self, window: np.ndarray) -> DriftResult:
        start = time.perf_counter()
        x = _as_matrix(window, len(self.feature_names), "window")
        ks = self._attribution.test(x)
        complete = x[np.isfinite(x).all(axis=1)]
        if complete.shape[0] < self.min_rows:
            p, stat, threshold, is_drift = 1.0, 0.0, self.p_value, False
        else:
            rows = self._subsample(self._standardize(complete)).astype(np.float32)
            data = self._mmd.predict(rows, return_p_val=True, return_distance=True)["data"]
            p, stat = float(data["p_val"]), float(data["distance"])
            threshold, is_drift = float(data["threshold"]), bool(data["is_drift"])
        features = [
            FeatureTest(
                name=f.name,
                p_value=f.p_value,
                statistic=f.statistic,
                rows=f.rows,
                missing=f.missing,
                tested=f.tested,
                drifted=is_drift and f.drifted,
            )
            for f in ks.features
        ]
        if is_drift and not any(f.drifted for f in features):
            # MMD saw a joint change no single sensor shows: name the most-moved ones.
            order = sorted(range(len(features)), key=lambda i: features[i].p_value)[:3]
            features = [
                FeatureTest(**{**f.__dict__, "drifted": i in order}) for i, f in enumerate(features)
            ]
        return DriftResult(
            detector=self.name,
            is_drift=is_drift,
            p_value=p,
            threshold=threshold,
            statistic=stat,
            rows=int(x.shape[0]),
            features=features,
            duration_seconds=time.perf_counter() - start,
            extra={"complete_rows": int(complete.shape[0])},
        )


DETECTORS: dict[str, Callable[..., Detector]] = {"ks": KSDetector, "mmd": MMDDetector}


def build_detector(
    name: str, reference: np.ndarray, feature_names: Sequence[str], **options: Any
) -> Detector:
    """The detector called `name` (ks | mmd) for this reference; options are its keywords."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(
            f"detector {name!r} is unknown; choose one of {sorted(DETECTORS)}"
        ) from None
    require_detector(name)
    if name != "mmd":
        options = {k: v for k, v in options.items() if k not in ("permutations", "max_rows")}
    return factory(reference, feature_names, **options)
