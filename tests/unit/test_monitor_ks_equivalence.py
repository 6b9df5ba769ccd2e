"""The sorted-reference KS gives alibi-detect's KSDrift answers: p-values, distances, thresholds
and decisions within 1e-9, on stable, drifted, tied, missing and tiny windows.

The oracle is alibi-detect's `KSDrift` with the per-feature test on the values present on both
sides (scipy's `ks_2samp`, method "asymp", as `KSDrift.feature_score` calls it), which is how
the monitor computed it before the reference was sorted once; without missing values it is
plain `KSDrift` (whose float32 outputs agree to float32 precision).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import ks_2samp

from loopline.monitoring.detectors import KSDetector
from loopline.monitoring.ks import SortedReference, corrected_threshold, ks_columns

FEATURES = 16
MIN_ROWS = 20


def _oracle(reference: np.ndarray, *, p_value: float, correction: str) -> Any:
    from alibi_detect.cd import KSDrift

    class PresentValuesKSDrift(KSDrift):
        def feature_score(self, x_ref: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            p = np.ones(self.n_features, dtype=np.float64)
            dist = np.zeros(self.n_features, dtype=np.float64)
            for f in range(self.n_features):
                ref = x_ref[:, f][np.isfinite(x_ref[:, f])]
                live = x[:, f][np.isfinite(x[:, f])]
                if live.size < MIN_ROWS or ref.size < MIN_ROWS:
                    continue
                res = ks_2samp(ref, live, alternative=self.alternative, method="asymp")
                dist[f], p[f] = float(res.statistic), float(res.pvalue)
            return p, dist

    return PresentValuesKSDrift(
        reference, p_val=p_value, correction=correction, n_features=reference.shape[1]
    )


def _windows() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(42)
    ref = rng.normal(size=(5000, FEATURES))
    stable = rng.normal(size=(500, FEATURES))
    drifted = rng.normal(size=(500, FEATURES))
    drifted[:, [1, 7]] += 0.4
    drifted[:, 11] *= 1.8
    slight = rng.normal(size=(2000, FEATURES))
    slight[:, 3] += 0.08
    # Sensors that report in steps: ties within and across the two samples.
    tied_ref = np.round(rng.normal(size=(3000, FEATURES)), 1)
    tied = np.round(rng.normal(0.05, 1, size=(700, FEATURES)), 1)
    gappy_ref = ref.copy()
    gappy_ref[rng.random(ref.shape) < 0.05] = np.nan
    gappy_ref[:, 5] = np.nan  # no reference at all: untested
    gappy = drifted.copy()
    gappy[rng.random(gappy.shape) < 0.2] = np.nan
    gappy[:490, 9] = np.nan  # 10 values left: below min_rows
    gappy[:, 2] = np.inf  # non-finite counts as missing
    tiny = rng.normal(0.5, 1, size=(MIN_ROWS, FEATURES))
    identical = ref[:400]
    return {
        "stable": (ref, stable),
        "drifted": (ref, drifted),
        "slight": (ref, slight),
        "ties": (tied_ref, tied),
        "missing": (gappy_ref, gappy),
        "tiny": (ref, tiny),
        "window inside the reference": (ref, identical),
    }


WINDOWS = _windows()


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
@pytest.mark.parametrize("case", sorted(WINDOWS))
def test_same_p_values_distances_and_decisions_as_ksdrift(case: str, correction: str) -> None:
    ref, window = WINDOWS[case]
    oracle = _oracle(ref, p_value=0.05, correction=correction)
    want = oracle.predict(window, drift_type="batch", return_p_val=True, return_distance=True)
    detector = KSDetector(
        ref, [f"f{i}" for i in range(FEATURES)], p_value=0.05, correction=correction,
        min_rows=MIN_ROWS,
    )  # fmt: skip
    got = detector.test(window)
    want_p = np.asarray(want["data"]["p_val"], dtype=np.float64)
    want_d = np.asarray(want["data"]["distance"], dtype=np.float64)
    np.testing.assert_allclose([f.p_value for f in got.features], want_p, rtol=0, atol=1e-9)
    np.testing.assert_allclose([f.statistic for f in got.features], want_d, rtol=0, atol=1e-9)
    raw = np.atleast_1d(np.asarray(want["data"]["threshold"], dtype=np.float64))
    threshold = raw.max() if want["data"]["is_drift"] else raw.min()
    assert got.threshold == pytest.approx(threshold, abs=1e-12)
    # KSDrift's batch verdict is "some p-value below the threshold"; the monitor's is the same
    # before its effect-size floor (0 here) and `<=` at the threshold itself.
    assert got.is_drift == bool(want["data"]["is_drift"])
    assert [f.drifted for f in got.features] == [bool(p <= threshold) for p in want_p]


def test_drifted_window_is_drift_and_stable_window_is_not() -> None:
    ref, drifted = WINDOWS["drifted"]
    detector = KSDetector(ref, [f"f{i}" for i in range(FEATURES)], p_value=0.01)
    assert detector.test(drifted).drifted_features == ["f1", "f7", "f11"]
    assert not detector.test(WINDOWS["stable"][1]).is_drift


def test_matches_bare_ksdrift_without_missing_values() -> None:
    from alibi_detect.cd import KSDrift

    ref, window = WINDOWS["drifted"]
    bare = KSDrift(ref, p_val=0.01).predict(window)["data"]
    got = ks_columns(SortedReference.of(ref), window, min_rows=MIN_ROWS)
    # KSDrift stores its p-values and distances as float32.
    np.testing.assert_allclose(got.p_value, bare["p_val"], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(got.statistic, bare["distance"], rtol=1e-6)
    assert bool((got.p_value < 0.01 / FEATURES).any()) == bool(bare["is_drift"])


def test_random_windows_match_scipy_exactly() -> None:
    rng = np.random.default_rng(7)
    for trial in range(30):
        n_ref, n_live = rng.integers(MIN_ROWS, 600, size=2)
        ref = rng.normal(size=(n_ref, 3))
        live = rng.normal(rng.normal(0, 0.3), rng.uniform(0.7, 1.4), size=(n_live, 3))
        if trial % 3 == 0:
            ref, live = np.round(ref, 1), np.round(live, 1)
        got = ks_columns(SortedReference.of(ref), live, min_rows=MIN_ROWS)
        for f in range(3):
            res = ks_2samp(ref[:, f], live[:, f], method="asymp")
            assert got.statistic[f] == res.statistic
            assert got.p_value[f] == pytest.approx(float(res.pvalue), abs=1e-12)


def test_fdr_threshold_is_alibi_detects() -> None:
    from alibi_detect.utils.statstest import fdr

    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.02, size=8) ** rng.uniform(0.5, 3)
        significant, raw = fdr(p, q_val=0.05)
        arr = np.atleast_1d(raw)
        want = arr.max() if significant else arr.min()
        assert corrected_threshold(p, 0.05, "fdr") == want


def test_wrong_window_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"shape \[rows, 16\]"):
        ks_columns(SortedReference.of(WINDOWS["stable"][0]), np.zeros((5, 3)), min_rows=2)


def test_kolmogorov_sf_is_scipys_kstwo_sf() -> None:
    from scipy.stats import kstwo

    from loopline.monitoring.ks import kolmogorov_sf

    rng = np.random.default_rng(11)
    # every branch: tiny d (Durbin, Ruben-Gambino), the Pelz-Good series, smirnov, 0, d >= 1/2
    # each n with the same 33 d values (scipy's exact sf costs ~10 ms a call for large n)
    sizes = np.array([1, 20, 140, 141, 454, 1818, 4000, 20_000, 150_000], dtype=np.float64)
    ds = np.concatenate([rng.uniform(0, 1, 12) ** 4, rng.uniform(0, 0.1, 18), [0, 0.5, 1.0]])
    n, d = (a.ravel() for a in np.meshgrid(sizes, ds))
    want = np.array([kstwo.sf(x, k) for x, k in zip(d, n, strict=True)])
    np.testing.assert_allclose(kolmogorov_sf(d, n), want, rtol=0, atol=1e-12)
