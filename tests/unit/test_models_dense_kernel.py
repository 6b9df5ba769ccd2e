"""The compiled scoring kernel against its references: numpy's `DenseStack` and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from loopline.models.bundle import DenseStack
from loopline.models.dense_kernel import PackedStack
from loopline.models.nets import autoencoder_config, build_network, classifier_config
from loopline.models.standardize import Standardizer

CONFIGS = [
    autoencoder_config(12, [32, 16], 4),
    autoencoder_config(5, [3], 2),
    classifier_config(12, [16, 8], 5),
]
IDS = ["autoencoder", "small-autoencoder", "classifier"]


def _network(config: dict[str, object]) -> tuple[torch.nn.Module, Standardizer, np.ndarray]:
    torch.manual_seed(5)
    net = build_network(config)
    net.eval()
    rng = np.random.default_rng(6)
    width = int(config["n_inputs"])  # type: ignore[call-overload]
    train = rng.normal(3.0, 2.0, size=(200, width)).astype(np.float32)
    return net, Standardizer.fit(train), rng.normal(3.0, 2.0, size=(97, width)).astype(np.float32)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_forward_matches_numpy_and_torch(config: dict[str, object]) -> None:
    net, scaler, x = _network(config)
    kernel = PackedStack.of(scaler.mean, scaler.scale, DenseStack.of(net).layers)
    got = kernel.forward(x)
    z = scaler.transform(x)
    with torch.inference_mode():
        expected = net(torch.from_numpy(z)).numpy()
    assert got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, DenseStack.of(net)(z), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS[:2], ids=IDS[:2])
def test_reconstruction_error_is_the_mean_squared_difference(config: dict[str, object]) -> None:
    net, scaler, x = _network(config)
    kernel = PackedStack.of(scaler.mean, scaler.scale, DenseStack.of(net).layers)
    z = scaler.transform(x)
    diff = DenseStack.of(net)(z) - z
    expected = (diff.astype(np.float64) ** 2).mean(axis=1)
    got = kernel.reconstruction_error(x)
    assert got.dtype == np.float32
    assert got.shape == (x.shape[0],)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_rows_of_any_layout_and_precision_score_the_same() -> None:
    net, scaler, x = _network(CONFIGS[0])
    kernel = PackedStack.of(scaler.mean, scaler.scale, DenseStack.of(net).layers)
    expected = kernel.reconstruction_error(x)
    np.testing.assert_array_equal(kernel.reconstruction_error(np.asfortranarray(x)), expected)
    np.testing.assert_array_equal(kernel.reconstruction_error(x.astype(np.float64)), expected)
    np.testing.assert_array_equal(kernel.reconstruction_error(x[3:4]), expected[3:4])
    assert kernel.reconstruction_error(x[:0]).shape == (0,)


def test_a_classifier_has_no_reconstruction_error() -> None:
    net, scaler, x = _network(CONFIGS[2])
    kernel = PackedStack.of(scaler.mean, scaler.scale, DenseStack.of(net).layers)
    kernel.warm_up()
    with pytest.raises(ValueError, match="not an autoencoder"):
        kernel.reconstruction_error(x)


def test_layers_that_do_not_chain_are_refused() -> None:
    w1, b1 = np.ones((4, 3), np.float32), np.zeros(3, np.float32)
    w2, b2 = np.ones((2, 4), np.float32), np.zeros(4, np.float32)
    mean, scale = np.zeros(4, np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="layer 1"):
        PackedStack.of(mean, scale, [(w1, b1, True), (w2, b2, False)])
    with pytest.raises(ValueError, match="scaler"):
        PackedStack.of(mean[:3], scale[:3], [(w1, b1, True)])
    with pytest.raises(ValueError, match="at least one layer"):
        PackedStack.of(mean, scale, [])
