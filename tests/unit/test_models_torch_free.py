"""Serving and monitoring without torch: the runtime image has none, so a bundle of format 2
must load and score with numpy alone, a format-1 bundle must fail with an error that says
what to do, and a monitor must refuse a detector that needs torch when it starts.

Each check runs in a child Python in which torch cannot be imported: a `sitecustomize` on
its PYTHONPATH puts a meta path finder first that refuses `torch` (and its submodules), as
if it were not installed. The child proves the block took effect before it checks anything,
so a test cannot pass by accident with torch loaded. The reference scores come from this
process, where torch trained the networks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from loopline.data.generator import GeneratorConfig, generate
from loopline.data.schema import SENSORS, factory_schema
from loopline.models.bundle import TORCH_FORMAT, ModelBundle, Scorer, load_bundle
from loopline.models.nets import build_network
from loopline.models.training import train_bundle
from loopline.types.common import Task
from loopline.types.policy import TrainingParams

PARAMS = TrainingParams(epochs=2, batch_size=128, hidden_units=[8], latent_dim=3)

SITECUSTOMIZE = '''\
"""Make torch unimportable in this interpreter, as in the runtime image."""
import importlib.abc
import sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
'''

# Runs first in every child: fail loudly unless torch really cannot be imported.
PRELUDE = """\
import json, sys
try:
    import torch
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("torch was importable: the block did not take effect")
"""


def _run_without_torch(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    blocker = tmp_path / "no-torch"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    df, _ = generate(GeneratorConfig(machines=2, days=1, interval_seconds=60, fault_fraction=0.1))
    return df


@pytest.fixture(scope="module", params=list(Task))
def bundle(request: pytest.FixtureRequest, frame: pd.DataFrame) -> ModelBundle:
    return train_bundle(frame, request.param, PARAMS, factory_schema().roles(request.param)).bundle


def _rows(frame: pd.DataFrame) -> np.ndarray:
    return frame[list(SENSORS)].dropna().to_numpy(np.float32)[:64]


def _torch_net(scorer: Scorer) -> nn.Module:
    """The trained network as a torch module again (its weights, torch's layout)."""
    net = build_network(scorer.config)
    linears = [m for m in net.children() if isinstance(m, nn.Linear)]
    assert len(linears) == len(scorer.dense.layers)
    with torch.no_grad():
        for module, (weight, bias, _) in zip(linears, scorer.dense.layers, strict=True):
            module.weight.copy_(torch.from_numpy(weight.T.copy()))
            module.bias.copy_(torch.from_numpy(bias))
    return net.eval()


def _torch_scores(scorer: Scorer, x: np.ndarray) -> np.ndarray:
    """What torch computes for `x`: reconstruction error or class probabilities."""
    z = torch.from_numpy(scorer.scaler.transform(x).astype(np.float32))
    with torch.no_grad():
        out = _torch_net(scorer)(z)
    if scorer.kind == "autoencoder":
        return ((out - z) ** 2).mean(dim=1).numpy()
    return torch.softmax(out, dim=1).numpy()


SCORE_SCRIPT = """
import numpy as np
from pathlib import Path
from loopline.models.bundle import load_bundle

folder, rows, out = (Path(arg) for arg in sys.argv[1:4])
x = np.load(rows)
bundle = load_bundle(folder)
core = x[:, bundle.core_indices]
results = {f"primary.{k}": v for k, v in bundle.score(x).items()}
results.update({f"fallback.{k}": v for k, v in bundle.score_fallback(core).items()})
np.savez(out, **{k: np.asarray(v) for k, v in results.items()})
assert "torch" not in sys.modules
"""


def test_a_format_2_bundle_loads_and_scores_without_torch_as_trained(
    bundle: ModelBundle, frame: pd.DataFrame, tmp_path: Path
) -> None:
    folder = bundle.save(tmp_path / "bundle")
    assert json.loads((folder / "bundle.json").read_text())["format"] == 2
    assert sorted(p.name for p in folder.iterdir()) == [
        "bundle.json",
        "fallback.npz",
        "primary.npz",
    ]
    x = _rows(frame)
    np.save(tmp_path / "rows.npy", x)
    child = _run_without_torch(
        tmp_path, SCORE_SCRIPT, str(folder), str(tmp_path / "rows.npy"), str(tmp_path / "out.npz")
    )
    assert child.returncode == 0, child.stderr
    with np.load(tmp_path / "out.npz", allow_pickle=False) as scored:
        got = {key: scored[key] for key in scored.files}
    core = x[:, bundle.core_indices]
    expected = {f"primary.{k}": v for k, v in bundle.score(x).items()}
    expected.update({f"fallback.{k}": v for k, v in bundle.score_fallback(core).items()})
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():  # the same weights through the same kernel
        np.testing.assert_array_equal(got[key], np.asarray(value), err_msg=key)
    # And what the torch networks themselves compute (float32 arithmetic, another order).
    key = "anomaly_score" if bundle.task == Task.ANOMALY_DETECTION else "probabilities"
    for role, scorer, rows in (
        ("primary", bundle.primary, x),
        ("fallback", bundle.fallback, core),
    ):
        np.testing.assert_allclose(
            got[f"{role}.{key}"], _torch_scores(scorer, rows), rtol=1e-4, atol=1e-6
        )


def _save_format_1(bundle: ModelBundle, folder: Path) -> Path:
    """A bundle as versions before format 2 wrote it: torch `state_dict` files."""
    folder.mkdir(parents=True)
    doc: dict[str, Any] = {"format": TORCH_FORMAT, "task": str(bundle.task)}
    for role, scorer in (("primary", bundle.primary), ("fallback", bundle.fallback)):
        torch.save(_torch_net(scorer).state_dict(), folder / f"{role}.pt")
        doc[role] = scorer.to_dict(f"{role}.pt")
    doc["metadata"] = bundle.metadata
    (folder / "bundle.json").write_text(json.dumps(doc))
    return folder


LOAD_SCRIPT = """
from loopline.models.bundle import BundleError, load_bundle

try:
    load_bundle(sys.argv[1])
except BundleError as exc:
    print(json.dumps({"error": str(exc)}))
else:
    print(json.dumps({"error": None}))
"""


def test_a_format_1_bundle_loads_with_torch_and_says_what_to_do_without(
    bundle: ModelBundle, frame: pd.DataFrame, tmp_path: Path
) -> None:
    folder = _save_format_1(bundle, tmp_path / "old")
    x = _rows(frame)
    loaded = load_bundle(folder)  # torch is here: imported lazily, the old version serves
    scores = loaded.score(x)
    for key, value in bundle.score(x).items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(scores[key], value, rtol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(scores[key], value, err_msg=key)
    child = _run_without_torch(tmp_path, LOAD_SCRIPT, str(folder))
    assert child.returncode == 0, child.stderr
    error = json.loads(child.stdout.strip().splitlines()[-1])["error"]
    assert error is not None, "a format-1 bundle loaded without torch"
    assert f"{folder} is a bundle of format 1" in error
    assert "pip install 'loopline[training]'" in error
    assert "ModelBundle.load_dir(folder).save(new_folder)" in error  # the conversion
    # The conversion it names works, and the result loads without torch.
    ModelBundle.load_dir(folder).save(tmp_path / "converted")
    child = _run_without_torch(tmp_path, LOAD_SCRIPT, str(tmp_path / "converted"))
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.strip().splitlines()[-1]) == {"error": None}


MONITOR_SCRIPT = """
import runpy
from loopline.monitoring.detectors import require_detector

require_detector("ks")  # numpy and scipy only: fine without torch
sys.argv = ["loopline", "monitor", "serve", "--model", "m", "--set", "detector=" + sys.argv[1]]
runpy.run_module("loopline.cli.main", run_name="__main__")
"""


def test_the_monitor_refuses_an_mmd_detector_at_start_without_torch(tmp_path: Path) -> None:
    """Refused before anything else (no token is set up here: the detector is the error)."""
    child = _run_without_torch(tmp_path, MONITOR_SCRIPT, "mmd")
    assert child.returncode != 0
    assert "detector 'mmd' needs torch" in child.stderr, child.stderr
    assert "Use detector 'ks'" in child.stderr
    assert "Traceback" not in child.stderr, "refused with a traceback, not a message"
