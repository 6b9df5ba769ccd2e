"""The training image's composition (loopline.images.compose) and the torch layer's closure
(docker/closure.py).

The composition is checked on manifests and configs shaped as podman's store gives them
(skopeo inspect of a buildah-built image: OCI, uncompressed layers, buildah's history); the
store and skopeo themselves are exercised by tests/realnode/test_images.py. The closure runs on
real files in a temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path
from typing import Any

import pytest

from loopline.images import compose

REPO_ROOT = Path(__file__).resolve().parents[2]


def _sha(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def _history(created_by: str, *, empty: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {"created": "2026-01-01T00:00:00Z", "created_by": created_by}
    if empty:
        entry["empty_layer"] = True
    return entry


def _runtime() -> tuple[dict[str, Any], dict[str, Any]]:
    """A runtime image as the Dockerfile builds it: base, user, venv | feature repo, wheel."""
    layers = ["base", "user", "venv", "feature_repo", "wheel"]
    history = [
        _history("/bin/sh -c #(nop) ADD file:x in /"),
        _history(
            "/bin/sh -c #(nop) LABEL org.opencontainers.image.title=loopline-runtime", empty=True
        ),
        _history("/bin/sh -c groupadd --gid 10001 loopline"),
        _history("/bin/sh -c #(nop) COPY dir:x in /opt/loopline/venv"),
        _history(
            f'/bin/sh -c #(nop) LABEL {compose.DEPENDENCIES_MARKER}="base, user, venv"', empty=True
        ),
        _history("/bin/sh -c #(nop) COPY dir:y in /opt/loopline/feature_repo/"),
        _history("/bin/sh -c #(nop) COPY dir:z in /opt/loopline/wheels/"),
        _history("/bin/sh -c /opt/loopline/venv/bin/python -m pip install"),
        _history("/bin/sh -c #(nop) ENV PATH=/opt/loopline/venv/bin", empty=True),
    ]
    # The wheel install is a layer too: six layers, the marker after the third.
    layers.append("install")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/opt/loopline/venv/bin"], "Labels": {"a": "b"}},
        "rootfs": {"type": "layers", "diff_ids": [_sha(n) for n in layers]},
        "history": history,
    }
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": compose.OCI_CONFIG, "digest": _sha("config"), "size": 1},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _sha(n), "size": 10}
            for n in layers
        ],
    }
    return manifest, config


def _layer() -> tuple[dict[str, Any], dict[str, Any]]:
    descriptor = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": _sha("torch"),
        "size": 4_000_000_000,
    }
    manifest = {"schemaVersion": 2, "config": {}, "layers": [descriptor]}
    config = {
        "rootfs": {"type": "layers", "diff_ids": [_sha("torch")]},
        "history": [_history("/bin/sh -c #(nop) COPY dir:t in /")],
    }
    return manifest, config


def test_the_torch_layer_goes_right_after_the_dependency_layers() -> None:
    runtime_manifest, runtime_config = _runtime()
    layer_manifest, layer_config = _layer()
    assert compose.insertion_point(runtime_config) == 3
    manifest_bytes, config_bytes = compose.compose(
        runtime_manifest, runtime_config, layer_manifest, layer_config
    )
    manifest, config = json.loads(manifest_bytes), json.loads(config_bytes)
    runtime_layers = runtime_config["rootfs"]["diff_ids"]
    expected = [*runtime_layers[:3], _sha("torch"), *runtime_layers[3:]]
    assert config["rootfs"]["diff_ids"] == expected
    assert [d["digest"] for d in manifest["layers"]] == expected
    # Every other layer is the runtime image's own descriptor: the same blobs.
    assert [d for d in manifest["layers"] if d["digest"] != _sha("torch")] == runtime_manifest[
        "layers"
    ]
    assert manifest["config"]["digest"] == compose.digest(config_bytes)
    assert manifest["config"]["size"] == len(config_bytes)
    assert manifest["mediaType"] == compose.OCI_MANIFEST


def test_the_history_gets_an_entry_for_the_torch_layer_in_its_place() -> None:
    _, runtime_config = _runtime()
    config = compose.training_config(runtime_config, _layer()[1], title="t", description="d")
    layered = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(layered) == len(config["rootfs"]["diff_ids"])
    assert "torch layer" in layered[3]["created_by"]
    assert "opt/loopline/venv" in layered[2]["created_by"]
    assert config["config"]["Labels"] == {
        "a": "b",
        "org.opencontainers.image.title": "t",
        "org.opencontainers.image.description": "d",
    }
    assert config["config"]["Env"] == runtime_config["config"]["Env"]
    assert runtime_config["rootfs"]["diff_ids"][3] == _sha("feature_repo"), "input unchanged"


def test_the_same_images_compose_to_the_same_bytes() -> None:
    first = compose.compose(*_runtime(), *_layer())
    assert compose.compose(*_runtime(), *_layer()) == first


def test_a_runtime_image_without_the_marker_is_refused() -> None:
    _, config = _runtime()
    config["history"] = [
        h for h in config["history"] if compose.DEPENDENCIES_MARKER not in h["created_by"]
    ]
    with pytest.raises(
        compose.CompositionError, match=r"no `LABEL org\.loopline\.dependency-layers`"
    ):
        compose.insertion_point(config)


def test_a_torch_layer_image_of_two_layers_is_refused() -> None:
    layer_manifest, layer_config = _layer()
    layer_manifest["layers"] *= 2
    layer_config["rootfs"]["diff_ids"] *= 2
    with pytest.raises(compose.CompositionError, match="exactly one layer, not 2"):
        compose.compose(*_runtime(), layer_manifest, layer_config)


def test_a_manifest_of_compressed_layers_is_refused() -> None:
    """A manifest read from a registry names gzip blobs, not the diff ids the config lists."""
    manifest, config = _runtime()
    manifest["layers"][0]["digest"] = _sha("gzip")
    with pytest.raises(compose.CompositionError, match="uncompressed"):
        compose.compose(manifest, config, *_layer())


def test_the_layout_holds_the_manifest_and_the_config_under_their_digests() -> None:
    manifest, config = compose.compose(*_runtime(), *_layer())
    files = compose.layout(manifest, config, "training")
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["annotations"] == {compose.REF_ANNOTATION: "training"}
    assert files[f"blobs/sha256/{entry['digest'].removeprefix('sha256:')}"] == manifest
    assert files[f"blobs/sha256/{compose.digest(config).removeprefix('sha256:')}"] == config
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}


# -- docker/closure.py -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def closure() -> dict[str, Any]:
    return runpy.run_path(str(REPO_ROOT / "docker" / "closure.py"))


def _venv(root: Path) -> Path:
    site = root / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "numpy" / "tests").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text("numpy\n")
    (site / "numpy" / "tests" / "test_a.py").write_text("x\n")
    (site / "numpy" / "__pycache__").mkdir()
    (site / "numpy" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    (site / "tests").mkdir()  # a top-level package called tests is kept
    (site / "tests" / "__init__.py").write_text("")
    (root / "venv" / "bin").mkdir()
    (root / "venv" / "bin" / "python").symlink_to("/usr/bin/python3")
    return root / "venv"


def test_clean_drops_byte_code_and_test_suites_only(
    closure: dict[str, Any], tmp_path: Path
) -> None:
    venv = _venv(tmp_path)
    closure["clean"](venv)
    site = venv / "lib" / "python3.11" / "site-packages"
    assert (site / "numpy" / "__init__.py").is_file()
    assert not (site / "numpy" / "tests").exists()
    assert not (site / "numpy" / "__pycache__").exists()
    assert (site / "tests" / "__init__.py").is_file()


def test_collect_moves_what_the_second_install_added(
    closure: dict[str, Any], tmp_path: Path
) -> None:
    venv = _venv(tmp_path)
    closure["clean"](venv)
    before = closure["snapshot"](venv)
    site = venv / "lib" / "python3.11" / "site-packages"
    (site / "torch").mkdir()
    (site / "torch" / "__init__.py").write_text("torch\n")
    (site / "torch" / "lib.so").write_bytes(b"\x7fELF")
    (venv / "bin" / "torchrun").write_text("#!/opt/loopline/venv/bin/python\n")
    (venv / "bin" / "torchrun").chmod(0o755)
    (site / "numpy" / "__init__.py").write_text("numpy, changed\n")
    out = tmp_path / "closure"
    closure["collect"](venv, before, out)
    moved = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    prefix = venv.relative_to("/").as_posix()
    assert moved == {
        f"{prefix}/lib/python3.11/site-packages/torch/__init__.py",
        f"{prefix}/lib/python3.11/site-packages/torch/lib.so",
        f"{prefix}/lib/python3.11/site-packages/numpy/__init__.py",
        f"{prefix}/bin/torchrun",
    }
    assert not (site / "torch" / "__init__.py").exists(), "new files are moved, not copied"
    assert (site / "numpy" / "__init__.py").is_file(), "a changed file stays below"
    assert (out / prefix / "bin" / "torchrun").stat().st_mode & 0o777 == 0o755


def test_collect_fails_when_the_second_install_removed_a_file(
    closure: dict[str, Any], tmp_path: Path
) -> None:
    venv = _venv(tmp_path)
    before = closure["snapshot"](venv)
    (venv / "lib" / "python3.11" / "site-packages" / "numpy" / "__init__.py").unlink()
    with pytest.raises(SystemExit, match="removed 1 files"):
        closure["collect"](venv, before, tmp_path / "closure")
