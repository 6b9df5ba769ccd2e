"""The process-monitoring baseline: PCA with Hotelling's T² and the Q statistic (SPE).

This is what a process engineer would fit before any network (MacGregor & Kourti, 1995): the
normal rows, standardised, span a few principal directions. A new row is unusual either
*inside* that subspace (T²: its scores on the kept components, each divided by that
component's variance, summed — "an extreme but familiar combination") or *off* it (Q, the
squared prediction error: what the kept components cannot reconstruct — "a combination never
seen in normal operation", e.g. two sensors that always move together no longer do).

Number of components: the fewest whose cumulative explained variance reaches
`EXPLAINED_VARIANCE` (90 %, the usual cumulative-percent-variance rule), and at most F - 1 so
the residual subspace Q watches is never empty. Ninety per cent keeps the correlated structure
of the plant (operating point, load) in T² and leaves the sensor noise to Q; a higher share
would move noise directions into T², where their tiny variances make T² jumpy.

One alarm score: each statistic divided by its mean on the normal rows it was fitted on (T²
has mean ~ the number of components, Q the residual variance), and the larger of the two, so
a row alarms when either is far above its normal level. The threshold on that score is
calibrated on held-out normal rows exactly like the autoencoder's, so at the same false-alarm
rate the report compares like with like. Numpy only: serving and the runtime image have no
torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from loopline.models.calibration import threshold
from loopline.models.standardize import Standardizer

EXPLAINED_VARIANCE = 0.90
# A statistic whose fitted mean is below this (a feature set PCA reconstructs exactly) is not
# divided by it: the floor keeps the score finite.
MIN_MEAN = 1e-12


def n_components(eigenvalues: np.ndarray, share: float = EXPLAINED_VARIANCE) -> int:
    """The fewest leading components explaining at least `share` of the variance, at most
    F - 1 (at least 1)."""
    total = float(eigenvalues.sum())
    features = len(eigenvalues)
    if total <= 0 or features == 1:
        return 1
    cumulative = np.cumsum(eigenvalues) / total
    a = int(np.searchsorted(cumulative, share - 1e-12) + 1)
    return max(1, min(a, features - 1))


@dataclass(frozen=True)
class PcaModel:
    """Principal subspace of standardised normal rows: loadings [F, A] and their variances."""

    scaler: Standardizer
    loadings: np.ndarray  # float64 [F, A], orthonormal columns
    variances: np.ndarray  # float64 [A], eigenvalues of the kept components
    explained: float  # share of the variance the kept components explain

    @classmethod
    def fit(cls, x: np.ndarray, share: float = EXPLAINED_VARIANCE) -> PcaModel:
        scaler = Standardizer.fit(x)
        z = scaler.transform(x).astype(np.float64)
        z = z - z.mean(axis=0)
        _, s, vt = np.linalg.svd(z, full_matrices=False)
        eig = s**2 / max(len(z) - 1, 1)
        a = n_components(eig, share)
        explained = float(eig[:a].sum() / eig.sum()) if eig.sum() > 0 else 1.0
        return cls(scaler=scaler, loadings=vt[:a].T.copy(), variances=eig[:a], explained=explained)

    def statistics(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T², Q) per row of raw readings `x` [N, F]."""
        z = self.scaler.transform(x).astype(np.float64)
        t = z @ self.loadings
        t2 = (t**2 / np.maximum(self.variances, MIN_MEAN)).sum(axis=1)
        residual = z - t @ self.loadings.T
        q = (residual**2).sum(axis=1)
        return t2, q

    def to_dict(self) -> dict[str, Any]:
        return {
            "scaler": self.scaler.to_dict(),
            "loadings": self.loadings.tolist(),
            "variances": self.variances.tolist(),
            "explained": self.explained,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PcaModel:
        features = len(data["scaler"]["mean"])
        return cls(
            scaler=Standardizer.from_dict(data["scaler"]),
            loadings=np.asarray(data["loadings"], dtype=np.float64).reshape(features, -1),
            variances=np.asarray(data["variances"], dtype=np.float64),
            explained=float(data["explained"]),
        )


@dataclass(frozen=True)
class PcaBaseline:
    """T² and Q of a PCA model, combined into one alarm score with a calibrated threshold."""

    pca: PcaModel
    t2_mean: float  # mean T² on the rows the PCA was fitted on
    q_mean: float  # mean Q on those rows
    threshold: float

    @classmethod
    def fit(
        cls,
        normal: np.ndarray,
        calibration: np.ndarray,
        quantile: float,
        max_false_alarm_rate: float | None = None,
    ) -> PcaBaseline:
        """Fit on `normal`; the threshold from the scores of `calibration` as the
        autoencoder's is (`loopline.models.calibration.threshold`)."""
        unfitted = cls.unthresholded(normal)
        score = unfitted.score(calibration)
        return unfitted.with_threshold(threshold(score, quantile, max_false_alarm_rate))

    @classmethod
    def unthresholded(cls, normal: np.ndarray) -> PcaBaseline:
        """The fitted statistics with no threshold yet (infinite: nothing alarms)."""
        pca = PcaModel.fit(normal)
        t2, q = pca.statistics(normal)
        return cls(pca=pca, t2_mean=float(t2.mean()), q_mean=float(q.mean()), threshold=np.inf)

    def with_threshold(self, threshold: float) -> PcaBaseline:
        return PcaBaseline(self.pca, self.t2_mean, self.q_mean, float(threshold))

    def score(self, x: np.ndarray) -> np.ndarray:
        t2, q = self.pca.statistics(x)
        t2n = t2 / max(self.t2_mean, MIN_MEAN)
        qn = q / self.q_mean if self.q_mean > MIN_MEAN else np.zeros_like(q)
        out: np.ndarray = np.maximum(t2n, qn)
        return out

    @property
    def components(self) -> int:
        return int(self.pca.loadings.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "pca_t2_q",
            "pca": self.pca.to_dict(),
            "t2_mean": self.t2_mean,
            "q_mean": self.q_mean,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PcaBaseline:
        return cls(
            pca=PcaModel.from_dict(data["pca"]),
            t2_mean=float(data["t2_mean"]),
            q_mean=float(data["q_mean"]),
            threshold=float(data["threshold"]),
        )
