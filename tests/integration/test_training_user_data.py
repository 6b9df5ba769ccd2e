"""Real data sets whose columns are not the generated ones, registered and trained end to end.

Both ship inside the scikit-learn wheel already in the environment (nothing is downloaded).
A class label: scikit-learn's copy of the UCI wine recognition data (`sklearn/datasets/data/
wine_data.csv`, read by `sklearn.datasets.load_wine`; shipped in the scikit-learn wheel, BSD-3
licensed package, data by Forina et al. via the UCI repository): 178 chemical analyses, 13
measured constituents, 3 cultivars. Measurements and classes are real; the entity (the cask a
sample came from, round-robin over three) and the timestamp (one sample an hour, in the
file's order) are assigned here, because the file has neither. The file is sorted by class,
so the newest fifth of the time holds one cultivar only: the case the per-label evaluation
split exists for.

Registered with `loopline data register` under other names than the generated data's
(`cask_id`, `sampled_at`, `cultivar`), trained with `python -m loopline.pipelines.run` (the
local backend's kfp.local runner, real Feast, Great Expectations, torch and a SQLite MLflow),
then the registered model and its recorded roles are checked. An anomaly flag: the breast
cancer data (see `diagnoses`), `clinic` / `seen_at` / `malignant`, trains the autoencoder.
About 30 s a run on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.artifacts import download_artifacts
from mlflow.models import Model

from loopline.cli.main import cli
from loopline.data.features import RepoSpec
from loopline.models.bundle import load_bundle
from loopline.tracking.experiments import client_for
from loopline.types.common import Task, Trigger
from loopline.types.dataset import MLFLOW_METADATA_KEY, DatasetRoles, LabelKind
from loopline.types.runs import RunPhase, TrainingRunResult, TrainingRunSpec
from tests.fixtures.training import fresh_tracking_uri

pytestmark = pytest.mark.slow

CORE = ["alcohol", "flavanoids", "color_intensity", "proline"]
REGISTER = ["--entity", "cask_id", "--timestamp", "sampled_at", "--label", "cultivar"]


def wine_readings() -> pd.DataFrame:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})
    frame["cultivar"] = [str(wine.target_names[t]) for t in frame.pop("target")]
    frame.insert(0, "cask_id", [f"cask-{i % 3}" for i in range(len(frame))])
    frame.insert(1, "sampled_at", pd.date_range("2026-03-01", periods=len(frame), freq="h"))
    return frame


def _register(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["data", "register", *args])
    return result.exit_code, result.output


def train(
    folder: Path,
    repo: Path,
    tracking_uri: str,
    task: Task,
    registered: str,
    params: dict[str, object],
    metric: str = "macro_f1",
) -> TrainingRunResult:
    """One run of the training pipeline as the local backend starts it; it must succeed."""
    namespace, model = registered.split(".")
    spec = TrainingRunSpec.model_validate(
        {
            "runId": f"{model}-1",
            "namespace": namespace,
            "modelName": model,
            "task": task,
            "trigger": Trigger.MANUAL,
            "featureService": "all_sensors",
            "registeredModelName": registered,
            "mlflowTrackingUri": tracking_uri,
            "featureRepo": str(repo),
            "params": params,
            "validation": {"metric": metric},
        }
    )
    (folder / "spec.json").write_text(spec.model_dump_json(by_alias=True))
    result_file = folder / "result.json"
    cmd = [sys.executable, "-m", "loopline.pipelines.run"]
    cmd += ["--spec", str(folder / "spec.json"), "--result", str(result_file)]
    done = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    result = TrainingRunResult.model_validate_json(result_file.read_text())
    assert result.phase == RunPhase.SUCCEEDED, (result.message, done.stderr[-3000:])
    assert result.model_version == "1"
    return result


def test_a_wrong_label_is_refused_at_registration_naming_the_columns(tmp_path: Path) -> None:
    source = tmp_path / "wine.csv"
    wine_readings().to_csv(source, index=False)
    repo = tmp_path / "repo"
    code, out = _register("--source", str(source), "--repo", str(repo), *REGISTER[:4])
    assert code == 1
    assert "--label COLUMN" in out
    code, out = _register(
        "--source", str(source), "--repo", str(repo), *REGISTER[:4], "--label", "is_fault"
    )
    assert code == 1
    assert "label column 'is_fault' (--label) is not in the file" in out
    assert "'cultivar'" in out
    assert not repo.exists()


def test_a_registered_real_data_set_trains_and_records_its_roles(
    tmp_path: Path,
    _empty_mlflow_db: Path,  # noqa: PT019 - the value (the template database) is used
) -> None:
    readings = wine_readings()
    newest = readings[readings["sampled_at"] >= readings["sampled_at"].quantile(0.8)]
    assert set(newest["cultivar"]) == {"class_2"}  # a plain time split would judge one class
    source = tmp_path / "wine.csv"
    readings.to_csv(source, index=False)
    repo = tmp_path / "repo"
    code, out = _register(
        "--source", str(source), "--repo", str(repo), *REGISTER, "--core", ",".join(CORE),
        "--no-materialize",
    )  # fmt: skip
    assert code == 0, out
    assert "label cultivar (class)" in out
    schema = RepoSpec.load(repo).data_schema
    assert (schema.entity, schema.timestamp, schema.label_names) == (
        "cask_id",
        "sampled_at",
        ["cultivar"],
    )
    assert "cultivar" not in schema.feature_names
    assert len(schema.feature_names) == 13

    tracking_uri = fresh_tracking_uri(_empty_mlflow_db, tmp_path / "mlflow")
    params = {"epochs": 60, "batchSize": 32, "seed": 0, "trainingWindowDays": 30}
    result = train(tmp_path, repo, tracking_uri, Task.CLASSIFICATION, "cellar.cultivar", params)
    # Every cultivar is judged, on its own newest fifth: ceil(0.2 * n) rows of each.
    counts = readings["cultivar"].value_counts()
    assert result.metrics["eval_rows"] == sum(int(np.ceil(0.2 * n)) for n in counts)
    assert result.metrics["macro_f1"] > 0.8  # the cultivars separate well on these analyses

    uri = "models:/cellar.cultivar/1"
    bundle = load_bundle(uri, tracking_uri=tracking_uri)
    expected = DatasetRoles(
        entity="cask_id",
        timestamp="sampled_at",
        features=schema.feature_names,
        core_features=CORE,
        label="cultivar",
        label_kind=LabelKind.CLASS,
        classes=["class_0", "class_1", "class_2"],
    )
    assert bundle.roles == expected
    assert bundle.class_names == expected.classes
    x = readings[schema.feature_names].to_numpy(np.float32)
    predicted = bundle.score(x)["class_name"]
    assert (predicted == readings["cultivar"].to_numpy()).mean() > 0.8

    # The MLflow model itself says which column is the entity (for a server that reads only it).
    client = client_for(tracking_uri)
    version = client.get_model_version("cellar.cultivar", "1")
    assert version.tags["loopline.entity"] == "cask_id"
    assert version.tags["loopline.label"] == "cultivar"
    assert version.tags["loopline.label_kind"] == "class"
    storage = client.get_model_version_download_uri("cellar.cultivar", "1")
    model_dir = Path(download_artifacts(artifact_uri=storage, tracking_uri=tracking_uri))
    metadata = Model.load(str(model_dir / "MLmodel")).metadata or {}
    assert DatasetRoles.model_validate(metadata[MLFLOW_METADATA_KEY]) == expected
    confusion = client.list_artifacts(str(result.mlflow_run_id), "reports")
    assert "reports/confusion_matrix.json" in {a.path for a in confusion}


def diagnoses() -> pd.DataFrame:
    """scikit-learn's copy of the UCI Breast Cancer Wisconsin (Diagnostic) data
    (`sklearn/datasets/data/breast_cancer.csv`; Wolberg, Street and Mangasarian): 569 cases,
    30 measurements of cell nuclei, and whether the case was malignant, here a 0/1 anomaly
    flag. The clinic (entity) and the time (one case an hour, in the file's order) are
    assigned here."""
    from sklearn.datasets import load_breast_cancer

    cancer = load_breast_cancer(as_frame=True)
    frame = cancer.frame.rename(columns=lambda c: str(c).replace(" ", "_"))
    frame["malignant"] = (frame.pop("target") == 0).astype(int)  # sklearn: 0 is malignant
    frame.insert(0, "clinic", [f"clinic-{i % 4}" for i in range(len(frame))])
    frame.insert(1, "seen_at", pd.date_range("2026-03-01", periods=len(frame), freq="h"))
    return frame


def test_a_real_anomaly_flag_under_another_name_trains_an_autoencoder(
    tmp_path: Path,
    _empty_mlflow_db: Path,  # noqa: PT019 - the value (the template database) is used
) -> None:
    cases = diagnoses()
    source = tmp_path / "cases.csv"
    cases.to_csv(source, index=False)
    repo = tmp_path / "repo"
    core = ["mean_radius", "mean_texture", "mean_concavity", "worst_area"]
    code, out = _register(
        "--source", str(source), "--repo", str(repo), "--entity", "clinic",
        "--timestamp", "seen_at", "--label", "malignant", "--core", ",".join(core),
        "--no-materialize",
    )  # fmt: skip
    assert code == 0, out
    assert "label malignant (anomaly-flag)" in out
    tracking_uri = fresh_tracking_uri(_empty_mlflow_db, tmp_path / "mlflow")
    params = {"epochs": 40, "batchSize": 32, "seed": 0, "trainingWindowDays": 60}
    result = train(
        tmp_path, repo, tracking_uri, Task.ANOMALY_DETECTION, "clinic.nuclei", params, "roc_auc"
    )
    flags = cases["malignant"]
    judged = int(np.ceil(0.2 * (flags == 1).sum())) + int(np.ceil(0.2 * (flags == 0).sum()))
    assert result.metrics["eval_rows"] == judged
    assert result.metrics["roc_auc"] > 0.85  # the autoencoder saw benign cases only

    bundle = load_bundle("models:/clinic.nuclei/1", tracking_uri=tracking_uri)
    roles = bundle.roles
    assert roles is not None
    assert (roles.entity, roles.timestamp, roles.label) == ("clinic", "seen_at", "malignant")
    assert roles.label_kind == LabelKind.ANOMALY_FLAG
    assert roles.core_features == core
    assert len(roles.features) == 30
    # the drift reference holds benign training cases only, with the data set's feature names
    client = client_for(tracking_uri)
    reference = pd.read_parquet(
        download_artifacts(
            run_id=str(result.mlflow_run_id),
            artifact_path="reference/reference.parquet",
            tracking_uri=tracking_uri,
        )
    )
    assert list(reference.columns) == roles.features
    benign = cases[cases["malignant"] == 0]
    assert len(reference) == len(benign) - int(np.ceil(0.2 * len(benign)))
    assert client.get_model_version("clinic.nuclei", "1").tags["loopline.label"] == "malignant"
