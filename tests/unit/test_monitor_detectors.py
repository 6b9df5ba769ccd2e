"""alibi-detect KS/MMD through the monitor's detectors: drift found, NaN never leaks."""

from __future__ import annotations

import numpy as np
import pytest

from loopline.monitoring.detectors import build_detector

NAMES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2000, 4))


def test_ks_names_the_shifted_feature_only(reference: np.ndarray) -> None:
    det = build_detector("ks", reference, NAMES, p_value=0.01, min_statistic=0.1)
    live = np.random.default_rng(1).normal(size=(1000, 4))
    assert not det.test(live).is_drift
    live[:, 2] += 1.0
    res = det.test(live)
    assert res.is_drift
    assert res.drifted_features == ["c"]
    assert res.p_values["c"] < 1e-10
    assert res.threshold == pytest.approx(0.01 / 4)


def test_effect_size_floor_ignores_tiny_but_significant_shifts(reference: np.ndarray) -> None:
    live = np.random.default_rng(2).normal(size=(20000, 4))
    live[:, 0] += 0.1  # KS distance ~0.04: significant with 20000 rows, irrelevant in practice
    plain = build_detector("ks", reference, NAMES, p_value=0.01, min_statistic=0.0)
    floored = build_detector("ks", reference, NAMES, p_value=0.01, min_statistic=0.2)
    assert plain.test(live).drifted_features == ["a"]
    assert not floored.test(live).is_drift


def test_missing_values_are_excluded_and_counted_never_nan(reference: np.ndarray) -> None:
    ref = reference.copy()
    ref[:100, 1] = np.nan
    det = build_detector("ks", ref, NAMES, p_value=0.01, min_rows=50)
    live = np.random.default_rng(3).normal(size=(500, 4))
    live[::2, 0] = np.nan  # half missing: still tested on the rest
    live[:, 3] = np.nan  # all missing: untested
    live[:, 0] += 2.0
    res = det.test(live)
    by = {f.name: f for f in res.features}
    assert by["a"].missing == 250
    assert by["a"].tested
    assert by["a"].drifted
    assert by["d"].missing == 500
    assert not by["d"].tested
    assert by["d"].p_value == 1.0
    assert all(np.isfinite(f.p_value) and np.isfinite(f.statistic) for f in res.features)
    assert res.drifted_features == ["a"]


def test_fdr_correction_threshold_is_one_number(reference: np.ndarray) -> None:
    det = build_detector("ks", reference, NAMES, p_value=0.05, correction="fdr")
    res = det.test(np.random.default_rng(4).normal(size=(500, 4)))
    assert isinstance(res.threshold, float)
    assert res.threshold == pytest.approx(0.05 / 4)


def test_mmd_pytorch_detects_joint_shift_and_attributes(reference: np.ndarray) -> None:
    det = build_detector(
        "mmd", reference * [1, 100, 1, 0.01], NAMES, p_value=0.05, permutations=50, max_rows=300
    )
    live = np.random.default_rng(5).normal(size=(300, 4)) * [1, 100, 1, 0.01]
    assert not det.test(live).is_drift
    live[:, 1] += 150.0
    live[:5, 0] = np.nan
    res = det.test(live)
    assert res.is_drift
    assert res.detector == "mmd"
    assert "b" in res.drifted_features
    assert res.extra["complete_rows"] == 295


def test_unknown_detector_is_a_clear_error(reference: np.ndarray) -> None:
    with pytest.raises(ValueError, match="detector 'lsdd' is unknown"):
        build_detector("lsdd", reference, NAMES)
    with pytest.raises(ValueError, match=r"reference must have shape \[rows, 3\]"):
        build_detector("ks", reference, NAMES[:3])
