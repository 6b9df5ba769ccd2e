"""The torch networks: a dense autoencoder and a dense classifier, rebuilt from a small config.

Networks are stored as a config dict plus plain arrays (never pickled modules), so loading a
model version runs no code from the artifact store and survives refactoring of this module.
torch is imported only by the functions that build modules: serving reads the config (the
names below) without it.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

AUTOENCODER = "autoencoder"
CLASSIFIER = "classifier"


def _mlp(sizes: list[int], *, last_activation: bool) -> list[nn.Module]:
    from torch import nn

    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or last_activation:
            layers.append(nn.ReLU())
    return layers


def autoencoder_config(n_inputs: int, hidden_units: list[int], latent_dim: int) -> dict[str, Any]:
    return {
        "type": AUTOENCODER,
        "n_inputs": n_inputs,
        "hidden_units": list(hidden_units),
        "latent_dim": latent_dim,
    }


def classifier_config(n_inputs: int, hidden_units: list[int], n_classes: int) -> dict[str, Any]:
    return {
        "type": CLASSIFIER,
        "n_inputs": n_inputs,
        "hidden_units": list(hidden_units),
        "n_classes": n_classes,
    }


def build_network(config: dict[str, Any]) -> nn.Module:
    """The untrained module a config describes; raises naming the field that is wrong."""
    from torch import nn

    kind = config.get("type")
    n_inputs = int(config["n_inputs"])
    hidden = [int(h) for h in config["hidden_units"]]
    if n_inputs < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"network config: n_inputs/hidden_units must be >= 1, got {config}")
    if kind == AUTOENCODER:
        latent = int(config["latent_dim"])
        encoder = _mlp([n_inputs, *hidden, latent], last_activation=True)
        decoder = _mlp([latent, *reversed(hidden), n_inputs], last_activation=False)
        return nn.Sequential(*encoder, *decoder)
    if kind == CLASSIFIER:
        return nn.Sequential(
            *_mlp([n_inputs, *hidden, int(config["n_classes"])], last_activation=False)
        )
    raise ValueError(
        f"network config: type must be {AUTOENCODER!r} or {CLASSIFIER!r}, got {kind!r}"
    )


def load_network(config: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    net = build_network(config)
    net.load_state_dict(state)
    net.eval()
    return net
