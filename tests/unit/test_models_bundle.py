"""The bundle's numpy API, its folder format and the pyfunc's primary/fallback routing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import CORE_SENSORS, FAULT_TYPES, SENSORS, factory_schema
from loopline.models.bundle import BundleError, DenseStack, ModelBundle, load_bundle
from loopline.models.nets import autoencoder_config, build_network, classifier_config
from loopline.models.pyfunc import (
    FALLBACK,
    MODEL_COLUMN,
    PRIMARY,
    input_example,
    predict_frame,
    signature_of,
)
from loopline.models.training import train_bundle
from loopline.types.common import Task
from loopline.types.policy import TrainingParams

PARAMS = TrainingParams(epochs=2, batch_size=128, hidden_units=[8], latent_dim=3)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df, _ = generate(GeneratorConfig(machines=2, days=1, interval_seconds=60, fault_fraction=0.1))
    return df


@pytest.fixture(scope="module", params=list(Task))
def bundle(request: pytest.FixtureRequest, frame: pd.DataFrame) -> ModelBundle:
    return train_bundle(frame, request.param, PARAMS, factory_schema().roles(request.param)).bundle


def test_names_follow_the_data_contract(bundle: ModelBundle) -> None:
    assert bundle.feature_names == list(SENSORS)
    assert bundle.core_feature_names == list(CORE_SENSORS)
    assert bundle.core_indices == [0, 1, 2, 3]
    if bundle.task == Task.CLASSIFICATION:
        assert bundle.class_names == list(FAULT_TYPES)


def test_score_outputs_have_contract_dtypes_and_shapes(
    bundle: ModelBundle, frame: pd.DataFrame
) -> None:
    x = frame[list(SENSORS)].dropna().to_numpy(np.float32)[:7]
    for out in (bundle.score(x), bundle.score_fallback(x[:, :4])):
        if bundle.task == Task.ANOMALY_DETECTION:
            assert out["anomaly_score"].dtype == np.float32
            assert out["threshold"].dtype == np.float32
            assert out["is_anomaly"].dtype == np.bool_
            assert out["anomaly_score"].shape == out["threshold"].shape == (7,)
            np.testing.assert_array_equal(
                out["is_anomaly"], out["anomaly_score"] > out["threshold"]
            )
        else:
            assert out["class_index"].dtype == np.int64
            assert out["probabilities"].shape == (7, len(FAULT_TYPES))
            assert out["probabilities"].dtype == np.float32
            np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
            assert [bundle.class_names[i] for i in out["class_index"]] == list(out["class_name"])


def test_wrong_width_is_refused_with_the_expected_columns(bundle: ModelBundle) -> None:
    with pytest.raises(BundleError, match=r"expected \[n, 12\]"):
        bundle.score(np.zeros((3, 4), np.float32))
    with pytest.raises(BundleError, match=r"expected \[n, 4\]"):
        bundle.score_fallback(np.zeros((3, 12), np.float32))


def test_save_and_load_round_trip_scores_identically(
    bundle: ModelBundle, frame: pd.DataFrame, tmp_path: Path
) -> None:
    bundle.save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    x = frame[list(SENSORS)].dropna().to_numpy(np.float32)[:50]
    for key, value in bundle.score(x).items():
        np.testing.assert_array_equal(loaded.score(x)[key], value)
    assert loaded.metadata["baseline"] == bundle.metadata["baseline"]


def test_load_of_a_folder_without_bundle_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle\.json is missing"):
        ModelBundle.load_dir(tmp_path)


def test_predict_routes_rows_with_missing_non_core_sensors_to_fallback(
    bundle: ModelBundle, frame: pd.DataFrame
) -> None:
    rows = frame[list(SENSORS)].dropna().head(5).reset_index(drop=True)
    rows.loc[1, "feed_rate"] = np.nan
    out = predict_frame(bundle, rows)
    assert list(out[MODEL_COLUMN]) == [PRIMARY, FALLBACK, PRIMARY, PRIMARY, PRIMARY]
    x = rows.to_numpy(np.float32)
    key = "anomaly_score" if bundle.task == Task.ANOMALY_DETECTION else "class_index"
    assert out[key][0] == bundle.score(x[:1])[key][0]
    assert out[key][1] == bundle.score_fallback(x[1:2, :4])[key][0]
    # A column absent altogether is a missing sensor for every row.
    out = predict_frame(bundle, rows.drop(columns=["power_factor"]))
    assert set(out[MODEL_COLUMN]) == {FALLBACK}


def test_predict_refuses_missing_core_sensor_naming_it(
    bundle: ModelBundle, frame: pd.DataFrame
) -> None:
    rows = frame[list(SENSORS)].dropna().head(3).reset_index(drop=True)
    with pytest.raises(BundleError, match="spindle_torque"):
        predict_frame(bundle, rows.drop(columns=["spindle_torque"]))
    rows.loc[2, "coolant_temperature"] = np.nan
    with pytest.raises(BundleError, match="coolant_temperature"):
        predict_frame(bundle, rows)


def test_signature_matches_predict_output(bundle: ModelBundle) -> None:
    sig = signature_of(bundle)
    example = input_example(bundle)
    out = predict_frame(bundle, example)
    assert sig.outputs is not None
    assert list(out.columns) == sig.outputs.input_names()
    required = [c.name for c in sig.inputs.inputs if c.required]
    assert required == list(CORE_SENSORS)
    assert list(out[MODEL_COLUMN]) == [PRIMARY, FALLBACK]


@pytest.mark.parametrize(
    "config",
    [
        autoencoder_config(12, [32, 16], 4),
        autoencoder_config(5, [3], 2),
        classifier_config(12, [16, 8], 5),
    ],
    ids=["autoencoder", "small-autoencoder", "classifier"],
)
def test_dense_stack_computes_what_the_torch_module_computes(config: dict[str, object]) -> None:
    """Scoring runs the weights as numpy; it must agree with torch's own forward pass."""
    torch.manual_seed(3)
    net = build_network(config)
    net.eval()
    x = np.random.default_rng(4).normal(size=(257, int(config["n_inputs"]))).astype(np.float32)
    with torch.inference_mode():
        expected = net(torch.from_numpy(x)).numpy()
    got = DenseStack.of(net)(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_network_that_is_not_a_dense_stack_is_refused() -> None:
    with pytest.raises(BundleError, match="Tanh"):
        DenseStack.of(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()))
