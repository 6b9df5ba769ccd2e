"""The `loopline data` command line end to end: generate, register, check, reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from click.testing import CliRunner

from loopline.cli.main import cli
from loopline.data import features
from loopline.data.generator import Manifest
from loopline.data.schema import CORE_SENSORS, SENSORS


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_generate_register_check(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    code, text = _run(
        "data", "generate", "--machines", "2", "--days", "2", "--interval", "300",
        "--recipe-change-at", "2026-01-02T00:00:00", "--out", str(out),
    )  # fmt: skip
    assert code == 0, text
    assert "wrote 1152 rows" in text
    manifest = Manifest.load(out / "manifest.json")
    assert len(manifest.of_kind("recipe_change")) == 2

    repo = tmp_path / "repo"
    code, text = _run("data", "register", "--source", str(out / "sensors.parquet"),
                      "--repo", str(repo))  # fmt: skip
    assert code == 0, text
    assert "using the schema declared in" in text  # the generator's schema.json
    assert "services all_sensors, core_sensors, all_sensors_rolling" in text
    store = features.open_store(repo)
    online = features.get_online_features(store, ["drill-01"], "core_sensors")
    assert list(online.columns) == ["machine_id", *CORE_SENSORS]
    frame = features.get_training_frame(repo, "all_sensors")
    assert len(frame) == 1152
    assert list(frame.columns[2:14]) == list(SENSORS)

    # Reference = day 1, gate on day 2: the recipe change shows up as a distribution shift.
    src = pd.read_parquet(out / "sensors.parquet")
    day1, day2 = tmp_path / "day1.parquet", tmp_path / "day2.parquet"
    cut = pd.Timestamp("2026-01-02", tz="UTC")
    src[src["event_timestamp"] < cut].to_parquet(day1)
    src[src["event_timestamp"] >= cut].to_parquet(day2)
    ref = tmp_path / "ref.json"
    schema = str(out / "schema.json")  # day1/day2 have none beside them
    code, text = _run(
        "data", "reference", "--source", str(day1), "--schema", schema, "--out", str(ref)
    )  # fmt: skip
    assert code == 0, text
    report = tmp_path / "report.json"
    code, text = _run("data", "check", "--source", str(day1), "--reference", str(ref),
                      "--schema", schema, "--window-end", "2026-01-02T00:00:00")  # fmt: skip
    assert code == 0, text
    assert text.startswith("data quality passed")
    code, text = _run("data", "check", "--source", str(day2), "--reference", str(ref),
                      "--schema", schema, "--window-end", "2026-01-03T00:00:00",
                      "--report", str(report))  # fmt: skip
    assert code == 1
    assert "distribution" in text
    assert json.loads(report.read_text())["dimensions"]["distribution"]["passed"] is False
    # The same window in a drift-triggered run: distribution is reported, advisory, not gating.
    code, text = _run("data", "check", "--source", str(day2), "--reference", str(ref),
                      "--schema", schema, "--window-end", "2026-01-03T00:00:00",
                      "--report", str(report), "--trigger", "drift")  # fmt: skip
    assert code == 0, text
    assert "advisory: run triggered by drift" in text
    distribution = json.loads(report.read_text())["dimensions"]["distribution"]
    assert distribution["advisory"] is True
    assert distribution["passed"] is False


def test_register_a_users_csv(tmp_path: Path) -> None:
    times = pd.date_range("2026-04-01", periods=30, freq="1h", tz="UTC")
    frame = pd.DataFrame(
        {
            "press_id": np.repeat(["A", "B"], 30),
            "ts": np.tile(times.strftime("%Y-%m-%d %H:%M:%S"), 2),
            "force": np.linspace(1, 2, 60),
            "temp": np.linspace(20, 30, 60),
            "note": "x",
            "jammed": np.tile([0, 0, 0, 1, 0], 12),
        }
    )
    csv = tmp_path / "press.csv"
    frame.to_csv(csv, index=False)
    repo = tmp_path / "repo"
    code, text = _run("data", "register", "--source", str(csv), "--repo", str(repo),
                      "--entity", "press_id", "--timestamp", "ts", "--core", "force",
                      "--label", "jammed",
                      "--name", "presses")  # fmt: skip
    assert code == 0, text
    assert "entity press (press_id)" in text
    assert "(2 features)" in text  # the string column `note` is not a feature
    got = features.get_training_frame(repo, "core_sensors")
    assert list(got.columns) == ["press_id", "ts", "force", "jammed"]  # the label rides along
    assert len(got) == 60
    online = features.get_online_features(features.open_store(repo), ["A", "B"])
    np.testing.assert_allclose(online["temp"], [frame["temp"].iloc[29], frame["temp"].iloc[59]])
