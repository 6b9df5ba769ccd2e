"""The online-feature cache against the real Feast repository (file registry, SQLite store).

Every read of the cache is compared with Feast's own `get_online_features` on a store opened
afresh at that moment: what the cache returns must be what Feast would, after materialisations
in this process, in another process, with the database file replaced, and after a registry
change.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import weakref
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from feast import FeatureService

from loopline.data import features
from loopline.data.online import OnlineFeatures, _feast_read, reader_for
from loopline.data.schema import CORE_SENSORS, ENTITY, SENSORS, factory_schema
from tests.fixtures.data import GeneratedData

MACHINES = ["drill-01", "drill-02", "drill-03"]
SERVICES = ["all_sensors", "core_sensors", "all_sensors_rolling"]


def _repo(path: Path, data: GeneratedData) -> Path:
    features.create_repo(path, data.parquet, factory_schema())
    features.apply(path)
    return path


def _feast(repo: Path, ids: list[str], service: str = "all_sensors") -> pd.DataFrame:
    """Feast's own read, on a store opened now (no state shared with the cache's store)."""
    return _feast_read(features.open_store(repo), ids, service)


def _materialize_elsewhere(repo: Path, end: pd.Timestamp) -> None:
    """Materialize up to `end` in another Python process (as `loopline data materialize`)."""
    script = (
        "import sys, pandas as pd\n"
        "from loopline.data import features\n"
        "start, _ = features.source_window(sys.argv[1])\n"
        "features.materialize(sys.argv[1], start, pd.Timestamp(sys.argv[2]).to_pydatetime())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(repo), end.isoformat()], check=True)


@pytest.fixture(scope="module")
def materialized(sensor_data: GeneratedData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = _repo(tmp_path_factory.mktemp("online-repo"), sensor_data)
    features.materialize(repo)
    return repo


@pytest.mark.parametrize("service", SERVICES)
def test_reads_what_feast_reads(materialized: Path, service: str) -> None:
    store = features.open_store(materialized)
    reader = OnlineFeatures(store)
    assert reader.cached
    for ids in (["drill-02"], [*MACHINES, "drill-99", "drill-01"], []):
        if not ids:
            continue
        got = reader.read(ids, service)
        pd.testing.assert_frame_equal(got, _feast(materialized, ids, service))
        pd.testing.assert_frame_equal(reader.read(ids, service), got)  # a hit, the same
    reader.close()


def test_values_and_columns(materialized: Path, sensor_data: GeneratedData) -> None:
    store = features.open_store(materialized)
    got = features.get_online_features(store, ["drill-03", "drill-99"], "core_sensors")
    assert list(got.columns) == [ENTITY, *CORE_SENSORS]
    newest = sensor_data.frame.groupby(ENTITY).tail(1).set_index(ENTITY)
    assert got.iloc[0][list(CORE_SENSORS)].to_numpy(float) == pytest.approx(
        newest.loc["drill-03", list(CORE_SENSORS)].to_numpy(float), rel=1e-6
    )
    assert got.iloc[1][list(CORE_SENSORS)].isna().all()
    assert reader_for(store) is reader_for(store)


def test_materialisation_in_another_process_is_seen_by_the_next_read(
    sensor_data: GeneratedData, tmp_path: Path
) -> None:
    repo = _repo(tmp_path / "repo", sensor_data)
    start, last = features.source_window(repo)
    middle = pd.Timestamp(start) + (pd.Timestamp(last) - pd.Timestamp(start)) / 2
    features.materialize(repo, start, middle.to_pydatetime())
    store = features.open_store(repo)
    before = features.get_online_features(store, MACHINES)  # the cache is warm
    pd.testing.assert_frame_equal(before, _feast(repo, MACHINES))

    _materialize_elsewhere(repo, pd.Timestamp(last) + timedelta(seconds=1))
    after = features.get_online_features(store, MACHINES)
    pd.testing.assert_frame_equal(after, _feast(repo, MACHINES))
    newest = sensor_data.frame.groupby(ENTITY).tail(1).set_index(ENTITY)
    assert after.set_index(ENTITY)["coolant_temperature"].to_numpy() == pytest.approx(
        newest.loc[MACHINES, "coolant_temperature"].to_numpy(), rel=1e-6
    )
    assert not after[list(SENSORS)].equals(before[list(SENSORS)])


def test_materialisation_in_this_process_is_seen(
    sensor_data: GeneratedData, tmp_path: Path
) -> None:
    repo = _repo(tmp_path / "repo", sensor_data)
    start, last = features.source_window(repo)
    store = features.open_store(repo)
    empty = features.get_online_features(store, MACHINES)  # nothing materialized yet
    assert empty[list(SENSORS)].isna().all().all()

    first = features.materialize(repo, start, start + timedelta(hours=6), store=store)
    assert first is store
    early = features.get_online_features(store, MACHINES)
    pd.testing.assert_frame_equal(early, _feast(repo, MACHINES))
    assert early[list(SENSORS)].notna().all().all()

    # Another store object of this process (its own SQLite connection) materializes the rest.
    features.materialize(repo, start, last + timedelta(seconds=1))
    late = features.get_online_features(store, MACHINES)
    pd.testing.assert_frame_equal(late, _feast(repo, MACHINES))
    assert not late.equals(early)


def test_a_replaced_database_is_followed(sensor_data: GeneratedData, tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo", sensor_data)
    start, _ = features.source_window(repo)
    features.materialize(repo)
    store = features.open_store(repo)
    newest = features.get_online_features(store, MACHINES)

    (repo / "data" / "online_store.db").unlink()  # e.g. torn down and rebuilt elsewhere
    features.apply(repo)  # the tables again, in a new file
    _materialize_elsewhere(repo, pd.Timestamp(start) + timedelta(hours=3))
    older = features.get_online_features(store, MACHINES)
    pd.testing.assert_frame_equal(older, _feast(repo, MACHINES))
    assert not older.equals(newest)


def test_a_changed_feature_service_is_followed(materialized: Path, tmp_path: Path) -> None:
    store = features.open_store(materialized)
    view = store.get_feature_view("sensor_readings")
    store.apply([FeatureService(name="probe", features=[view[["coolant_temperature"]]])])
    try:
        assert list(features.get_online_features(store, MACHINES, "probe").columns) == [
            ENTITY,
            "coolant_temperature",
        ]
        store.apply(
            [
                FeatureService(
                    name="probe", features=[view[["coolant_temperature", "spindle_torque"]]]
                )
            ]
        )
        got = features.get_online_features(store, MACHINES, "probe")
        assert list(got.columns) == [ENTITY, "coolant_temperature", "spindle_torque"]
        pd.testing.assert_frame_equal(got, _feast_read(store, MACHINES, "probe"))
    finally:
        store.delete_feature_service("probe")


def test_refresh_after_materialize_keeps_entities_warm(
    sensor_data: GeneratedData, tmp_path: Path
) -> None:
    repo = _repo(tmp_path / "repo", sensor_data)
    start, last = features.source_window(repo)
    store = features.materialize(repo, start, start + timedelta(hours=6))
    reader = reader_for(store)
    reader.read(MACHINES, "all_sensors")
    features.materialize(repo, start, last + timedelta(seconds=1), store=store)
    assert set(reader._rows["sensor_readings"]) == set(MACHINES)  # re-read, not dropped
    pd.testing.assert_frame_equal(reader.read(MACHINES, "all_sensors"), _feast(repo, MACHINES))


def test_another_online_store_is_read_by_feast(
    sensor_data: GeneratedData, tmp_path: Path, redis_url: str
) -> None:
    """Redis (the cluster's online store, a real redis-server here): Feast's own read."""
    repo = tmp_path / "repo"
    features.create_repo(repo, sensor_data.parquet, factory_schema(), rolling=False)
    address = urlsplit(redis_url).netloc
    yaml = (repo / "feature_store.yaml").read_text()
    start = yaml.index("online_store:")
    end = yaml.index("\n# Offline store")
    redis = f"online_store:\n  type: redis\n  connection_string: {address}\n"
    (repo / "feature_store.yaml").write_text(yaml[:start] + redis + yaml[end:])
    store = features.apply(repo)
    first, last = features.source_window(repo)
    features.materialize(repo, first, first + timedelta(hours=6), store=store)
    reader = reader_for(store)
    assert not reader.cached
    early = reader.read(MACHINES, "core_sensors")
    pd.testing.assert_frame_equal(early, _feast(repo, MACHINES, "core_sensors"))
    _materialize_elsewhere(repo, pd.Timestamp(last) + timedelta(seconds=1))
    late = reader.read(MACHINES, "core_sensors")
    pd.testing.assert_frame_equal(late, _feast(repo, MACHINES, "core_sensors"))
    assert not late.equals(early)


def test_threads_read_while_another_store_materializes(
    sensor_data: GeneratedData, tmp_path: Path
) -> None:
    """Every row read while a materialisation commits is the one before it or the one after."""
    repo = _repo(tmp_path / "repo", sensor_data)
    start, last = features.source_window(repo)
    store = features.materialize(repo, start, start + timedelta(hours=6))
    before = features.get_online_features(store, MACHINES).set_index(ENTITY)
    seen: list[pd.DataFrame] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(features.get_online_features(store, MACHINES))
        except BaseException as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    features.materialize(repo, start, last + timedelta(seconds=1))  # another store object
    done.set()
    for t in threads:
        t.join()
    assert not errors
    after = features.get_online_features(store, MACHINES)
    pd.testing.assert_frame_equal(after, _feast(repo, MACHINES))
    after_rows = after.set_index(ENTITY)
    assert seen
    for frame in seen:
        for machine, row in frame.set_index(ENTITY).iterrows():
            assert row.equals(before.loc[machine]) or row.equals(after_rows.loc[machine])


def test_a_reader_does_not_keep_its_store_alive(materialized: Path) -> None:
    store = features.open_store(materialized)
    reader = reader_for(store)
    reader.read(["drill-01"], "core_sensors")
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None
    with pytest.raises(ReferenceError):
        reader.read(["drill-01"], "core_sensors")


def test_a_forked_child_reads_through_its_own_connection(materialized: Path) -> None:
    store = features.open_store(materialized)
    parent = features.get_online_features(store, MACHINES)  # the connection is open
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def child() -> None:
        reader = reader_for(store)
        frame = reader.read(MACHINES, "all_sensors")
        queue.put((frame, reader._held[0] is not None and reader._pid == os.getpid()))

    process = context.Process(target=child)
    process.start()
    frame, own_connection = queue.get(timeout=60)
    process.join(timeout=60)
    assert process.exitcode == 0
    assert own_connection
    pd.testing.assert_frame_equal(frame, parent)
    pd.testing.assert_frame_equal(features.get_online_features(store, MACHINES), parent)
