"""The plant's readings land in the feature repository's source files (no Feast server)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from loopline.data.features import RepoSpec, create_repo
from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import TIMESTAMP, factory_schema
from loopline.demo.landing import Landing
from loopline.demo.traffic import PlantStream


def test_live_batches_land_after_the_history(tmp_path: Path) -> None:
    frame, manifest = generate(GeneratorConfig(machines=3, days=0.5, interval_seconds=600))
    repo = tmp_path / "repo"
    create_repo(repo, frame, factory_schema())
    landing = Landing(repo, frame)
    assert landing.land() == 0  # nothing new: the files stay as they are

    clock = iter(pd.date_range(datetime(2030, 1, 1, tzinfo=UTC), periods=10, freq="1s"))
    stream = PlantStream(manifest, clock=lambda: next(clock).to_pydatetime())
    for _ in range(4):
        landing.add(stream.next_batch())
    assert landing.land() == 12

    spec = RepoSpec.load(repo)
    source = pd.read_parquet(spec.path(repo, spec.source))
    assert len(source) == len(frame) + 12
    assert source[TIMESTAMP].is_monotonic_increasing
    assert source[TIMESTAMP].max() == pd.Timestamp("2030-01-01 00:00:03", tz="UTC")
    assert spec.rolling_source is not None
    rolled = pd.read_parquet(spec.path(repo, spec.rolling_source))
    assert len(rolled) == len(source)
    assert not list((repo / "data").glob(".*.tmp"))
