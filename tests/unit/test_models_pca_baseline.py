"""PCA Hotelling T² + Q: known answers on data built to have them, and what Q sees that max-|z|
cannot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loopline.models.baseline import RangeBaseline
from loopline.models.pca_baseline import PcaBaseline, PcaModel, n_components

# Columns: x1, x2 == x1, x3 orthogonal to x1. Means 0, std 1, so standardising changes nothing;
# the covariance (n - 1 = 3) is 4/3 * [[1, 1, 0], [1, 1, 0], [0, 0, 1]]: eigenvalues 8/3 along
# (1, 1, 0)/sqrt(2), 4/3 along (0, 0, 1), 0 along (1, -1, 0)/sqrt(2).
KNOWN = np.array([[1, 1, 1], [-1, -1, 1], [1, 1, -1], [-1, -1, -1]], dtype=np.float32)


@pytest.mark.parametrize(
    ("eigenvalues", "expected"),
    [
        ([5.0, 3.0, 1.0, 1.0], 3),  # 50 %, 80 %, 90 %: three reach the 90 % share
        ([9.0, 0.5, 0.5], 1),  # the first alone explains 90 %
        ([1.0, 1.0], 1),  # two would leave Q nothing to watch
        ([1.0, 0.0, 0.0], 1),
        ([2.0], 1),
    ],
)
def test_components_by_explained_variance(eigenvalues: list[float], expected: int) -> None:
    assert n_components(np.asarray(eigenvalues)) == expected


def test_known_subspace_and_variances() -> None:
    pca = PcaModel.fit(KNOWN)
    assert pca.loadings.shape == (3, 2)
    np.testing.assert_allclose(pca.variances, [8 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(pca.explained, 1.0, rtol=1e-6)
    first = np.abs(pca.loadings[:, 0])
    np.testing.assert_allclose(first, [2**-0.5, 2**-0.5, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    ("row", "t2", "q"),
    [
        ([2.0, 2.0, 0.0], 3 * 4 / 4, 0.0),  # along the main component: T² = 2d²/(8/3)
        ([2.0, -2.0, 0.0], 0.0, 8.0),  # off the subspace: Q = 2d²
        ([0.0, 0.0, 2.0], 3 * 4 / 4, 0.0),  # along the second: T² = d²/(4/3)
        ([1.0, 0.0, 0.0], 3 / 16, 0.5),  # half in (t = 1/sqrt(2): T² = 0.5/(8/3)), half out
    ],
)
def test_t2_and_q_known_answers(row: list[float], t2: float, q: float) -> None:
    got_t2, got_q = PcaModel.fit(KNOWN).statistics(np.asarray([row], dtype=np.float32))
    np.testing.assert_allclose(got_t2, [t2], atol=1e-5)
    np.testing.assert_allclose(got_q, [q], atol=1e-5)


def _correlated(n: int, seed: int) -> np.ndarray:
    """Four sensors: two that move together (load), one following them, one independent."""
    rng = np.random.default_rng(seed)
    load = rng.normal(size=n)
    return np.column_stack(
        [
            load + 0.05 * rng.normal(size=n),
            load + 0.05 * rng.normal(size=n),
            0.8 * load + 0.3 * rng.normal(size=n),
            rng.normal(size=n),
        ]
    ).astype(np.float32)


def test_q_sees_a_broken_correlation_that_max_z_misses() -> None:
    fit, cal = _correlated(4000, 0), _correlated(2000, 1)
    pca = PcaBaseline.fit(fit, cal, 0.995)
    ranges = RangeBaseline.fit(fit, cal, 0.995)
    # Each sensor within 1.5 standard deviations, but the two that always agree disagree.
    broken = np.array([[1.5, -1.5, 0.0, 0.0]], dtype=np.float32)
    assert ranges.score(broken)[0] < ranges.threshold
    assert pca.score(broken)[0] > 5 * pca.threshold
    assert pca.components == 2  # load and the independent sensor: 90 % of the variance


def test_threshold_gives_the_calibrated_alarm_rate_on_fresh_normal_rows() -> None:
    pca = PcaBaseline.fit(_correlated(4000, 0), _correlated(4000, 1), 0.99)
    fresh = pca.score(_correlated(20000, 2))
    assert 0.005 < float((fresh > pca.threshold).mean()) < 0.02


def test_round_trips_through_json() -> None:
    pca = PcaBaseline.fit(_correlated(500, 0), _correlated(200, 1), 0.99)
    again = PcaBaseline.from_dict(json.loads(json.dumps(pca.to_dict())))
    x = _correlated(50, 3)
    np.testing.assert_allclose(again.score(x), pca.score(x), rtol=1e-9)
    assert again.threshold == pca.threshold
