"""The image build as data (loopline.images.plan): what changes a tag, what does not, the order
of the plan, the torch layer's inputs, the build arguments and the commands.

A tag that changes when nothing relevant changed rebuilds for minutes; one that stays when an
input changed ships a stale image under a tag that claims otherwise. Both are checked here on
real build contexts read off disk (a small checkout in a temporary folder, and this one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loopline.images import compose, inputs, plan
from loopline.images.errors import ImagesError
from loopline.images.plan import BasePlan, ImagePlan, Store, TorchLayerPlan
from loopline.images.runner import Images

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = b"Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n"


def _base(**changes: bytes) -> BasePlan:
    script = changes.get("script", b"#!/bin/sh\nexec mmdebstrap ...\n")
    packages = changes.get("packages", b"ca-certificates\npython3\npython3-venv\n")
    sources = changes.get("sources", SOURCES)
    return plan.plan_base(
        script=script,
        packages=packages,
        sources={"debian.sources": sources},
        source_paths=[Path("/cache/apt/x.sources")],
    )


PYPROJECT = """[project]
name = 'loopline'
dynamic = ["dependencies", "optional-dependencies"]

[tool.setuptools.dynamic]
dependencies = { file = ["requirements/base.in"] }
optional-dependencies = { training = { file = ["requirements/training.in"] } }

[tool.setuptools]
packages = ["loopline"]
"""


def _checkout(root: Path) -> Path:
    """A small checkout: the real Dockerfile and allow-list, and a few package files."""
    (root / "docker").mkdir(parents=True)
    for name in (
        plan.DOCKERFILE,
        plan.DOCKERIGNORE,
        "docker/requirements.py",
        plan.TORCH_DOCKERFILE,
        plan.CLOSURE_SCRIPT,
        plan.BASE_SCRIPT,
        plan.BASE_PACKAGES,
    ):
        shutil.copy(REPO_ROOT / name, root / name)
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": "# Loopline\n",
        "requirements/base.in": "numpy\n",
        "requirements/training.in": "torch==2.0.0\n",
        "requirements/lock.txt": "numpy==2.0.0\n",
        "loopline/__init__.py": '__version__ = "0.1.0"\n',
        "loopline/cli/__init__.py": "",
        "operators/__init__.py": "",
        "pipelines/__init__.py": "",
        "components/__init__.py": "",
        "serving/__init__.py": "",
        "monitoring/__init__.py": "",
        "feature_repo/feature_store.yaml": "project: loopline\n",
        "tests/test_x.py": "def test_x(): pass\n",
        "docs/images.md": "# Images\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _context(repo: Path) -> dict[str, bytes]:
    patterns = plan.context_patterns((repo / plan.DOCKERIGNORE).read_text())
    return inputs.read_context(repo, patterns)


def _layer(repo: Path, **kwargs: object) -> TorchLayerPlan:
    runtime, training = inputs.requirement_lists(repo)
    return plan.plan_torch_layer(
        base=kwargs.pop("base", _base()),  # type: ignore[arg-type]
        dockerfile=(repo / plan.TORCH_DOCKERFILE).read_bytes(),
        closure_script=(repo / plan.CLOSURE_SCRIPT).read_bytes(),
        lock=(repo / plan.LOCK).read_bytes(),
        runtime_requirements=runtime,
        training_requirements=training,
        **kwargs,  # type: ignore[arg-type]
    )


def _image(repo: Path, flavour: plan.Flavour = "runtime", **kwargs: object) -> ImagePlan:
    base = kwargs.pop("base", _base())
    runtime = plan.plan_runtime(
        version=inputs.package_version(repo),
        base=base,  # type: ignore[arg-type]
        context=_context(repo),
    )
    if flavour == "runtime":
        return runtime
    return plan.plan_training(runtime, _layer(repo, base=base, **kwargs), compose.COMPOSITION)


# -- content hashes --------------------------------------------------------------------------


def test_content_hash_ignores_order_and_separates_names_from_contents() -> None:
    a = plan.content_hash({"x": b"1", "y": b"2"})
    assert a == plan.content_hash({"y": b"2", "x": b"1"})
    assert len(a) == plan.HASH_LENGTH
    assert a != plan.content_hash({"x": b"1", "y": b"3"})
    assert a != plan.content_hash({"x": b"1", "z": b"2"})
    # Length prefixes: a name and a content never run together.
    assert plan.content_hash({"ab": b"c"}) != plan.content_hash({"a": b"bc"})


def test_base_tag_follows_script_packages_and_sources_only() -> None:
    base = _base()
    assert base.reference == f"{plan.BASE_REPOSITORY}:{base.tag}"
    assert _base().tag == base.tag
    for field in ("script", "packages", "sources"):
        assert _base(**{field: b"changed\n"}).tag != base.tag, field
    moved = plan.plan_base(
        script=b"#!/bin/sh\nexec mmdebstrap ...\n",
        packages=b"ca-certificates\npython3\npython3-venv\n",
        sources={"debian.sources": SOURCES},
        source_paths=[Path("/elsewhere/y.sources")],
    )
    assert moved.tag == base.tag, "where the sources file is written is not an input"


def test_image_tag_is_version_and_hash(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    image = _image(repo)
    version, _, digest = image.tag.partition("-")
    assert version == "0.1.0"
    assert len(digest) == plan.HASH_LENGTH
    assert image.reference == f"localhost/loopline/runtime:{image.tag}"
    assert _image(repo).tag == image.tag, "the same inputs give the same tag"


@pytest.mark.parametrize(
    "path",
    [
        "loopline/cli/__init__.py",
        "operators/__init__.py",
        "feature_repo/feature_store.yaml",
        "requirements/lock.txt",
        "pyproject.toml",
        "README.md",
        plan.DOCKERFILE,
        "docker/requirements.py",
    ],
)
def test_image_tag_changes_with_every_context_file(tmp_path: Path, path: str) -> None:
    repo = _checkout(tmp_path)
    before = _image(repo).tag
    with (repo / path).open("a") as file:
        file.write("\n# changed\n")
    assert _image(repo).tag != before


def test_image_tag_changes_when_a_file_is_added_or_removed(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    before = _image(repo).tag
    (repo / "serving" / "new.py").write_text("")
    added = _image(repo).tag
    assert added != before
    (repo / "serving" / "new.py").unlink()
    assert _image(repo).tag == before


def test_image_tag_ignores_what_the_build_does_not_read(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    before = _image(repo).tag
    (repo / "tests" / "test_x.py").write_text("def test_y(): pass\n")
    (repo / "docs" / "images.md").write_text("# Changed\n")
    (repo / "loopline" / "__pycache__").mkdir()
    (repo / "loopline" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (repo / "operators" / "stale.pyc").write_bytes(b"\0")
    (repo / "loopline.egg-info").mkdir()
    (repo / "loopline.egg-info" / "PKG-INFO").write_text("x")
    with (repo / plan.DOCKERIGNORE).open("a") as file:
        file.write("# a comment\n")
    assert _image(repo).tag == before


def test_image_tag_follows_version_base_and_arguments(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    runtime = _image(repo)
    assert _image(repo, base=_base(packages=b"python3\n")).tag != runtime.tag
    (repo / "loopline" / "__init__.py").write_text('__version__ = "0.2.0"\n')
    assert _image(repo).tag.startswith("0.2.0-")
    training = _image(repo, "training")
    index = _image(repo, "training", torch_index_url="http://wheels.invalid/cpu")
    assert index.tag != training.tag
    assert index.runtime == training.runtime, "the runtime image takes no torch index"


# -- the torch layer and the training image ---------------------------------------------------


def test_torch_layer_ignores_every_source_change(tmp_path: Path) -> None:
    """A source change (a module, the package list in pyproject.toml, the Feast repository,
    the runtime Dockerfile) makes a new runtime and training tag, never a new torch layer."""
    repo = _checkout(tmp_path)
    layer, training = _layer(repo), _image(repo, "training")
    for path in (
        "loopline/cli/__init__.py",
        "feature_repo/feature_store.yaml",
        plan.DOCKERFILE,
        "README.md",
    ):
        with (repo / path).open("a") as file:
            file.write("\n# changed\n")
        assert _layer(repo).tag == layer.tag, path
        changed = _image(repo, "training")
        assert changed.tag != training.tag, path
        assert changed.torch_layer == training.torch_layer, path
        training = changed
    text = (repo / "pyproject.toml").read_text()
    (repo / "pyproject.toml").write_text(text.replace('["loopline"]', '["loopline", "x"]'))
    assert _layer(repo).tag == layer.tag, "a new sub-package does not rebuild torch"


@pytest.mark.parametrize(
    "path",
    [
        plan.LOCK,
        plan.TORCH_DOCKERFILE,
        plan.CLOSURE_SCRIPT,
        "requirements/training.in",
        "requirements/base.in",
    ],
)
def test_torch_layer_follows_its_inputs(tmp_path: Path, path: str) -> None:
    repo = _checkout(tmp_path)
    layer, training = _layer(repo), _image(repo, "training")
    with (repo / path).open("a") as file:
        file.write("\nscipy\n" if path.endswith(".in") else "\n# changed\n")
    assert _layer(repo).tag != layer.tag
    assert _image(repo, "training").tag != training.tag


def test_torch_layer_follows_the_base_and_the_index(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    layer = _layer(repo)
    assert _layer(repo, base=_base(packages=b"python3\n")).tag != layer.tag
    assert _layer(repo, torch_index_url="http://i/cpu").tag != layer.tag
    assert layer.reference == f"localhost/loopline/torch-layer:{layer.tag}"


# -- flavours and order ----------------------------------------------------------------------


def test_flavours_and_their_order() -> None:
    """The runtime image comes first: it is the one the cluster needs, and the small one."""
    assert plan.FLAVOURS == ("runtime", "training")


def test_runtime_drops_torch(tmp_path: Path) -> None:
    runtime = _image(_checkout(tmp_path))
    assert runtime.build_args == {
        "FLAVOUR": "runtime",
        "WITHOUT": "torch",
        "BASE_IMAGE": _base().reference,
    }


def test_torch_layer_installs_the_training_list_over_the_runtime_list(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    layer = _layer(repo)
    assert layer.context["runtime.txt"] == b"numpy\n"
    assert layer.context["training.txt"] == b"numpy\ntorch==2.0.0\n"
    assert layer.context["lock.txt"] == (repo / plan.LOCK).read_bytes()
    assert set(layer.context) == {
        "Dockerfile",
        "closure.py",
        "lock.txt",
        "runtime.txt",
        "training.txt",
    }
    assert layer.build_args == {"BASE_IMAGE": _base().reference}
    with_index = _layer(repo, torch_index_url="http://i/cpu")
    assert with_index.build_args["TORCH_INDEX_URL"] == "http://i/cpu"


def test_flavours_differ_and_name_their_repository(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    runtime, training = _image(repo), _image(repo, "training")
    assert runtime.tag != training.tag
    assert training.tag.startswith("0.1.0-")
    assert training.repository == "localhost/loopline/training"
    assert training.runtime == runtime
    assert training.torch_layer == _layer(repo)
    assert plan.DOCKERFILE in runtime.context
    assert "tests/test_x.py" not in runtime.context


def test_runner_plans_in_the_order_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Images.plans reads the real inputs; the apt sources come from a folder written here
    instead of this machine's /etc/apt, so the test does not depend on the host."""
    repo = _checkout(tmp_path / "repo")
    (repo / "requirements" / "training.in").write_text("torch\n")
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_bytes(SOURCES)
    read_sources = inputs.debian_sources
    monkeypatch.setattr(inputs, "debian_sources", lambda: read_sources(apt))
    images = Images(repo, tmp_path / "cache", echo=lambda _: None)
    plans = images.plans()
    assert [p.flavour for p in plans] == ["runtime", "training"]
    assert plans[1].runtime == plans[0]
    assert [p.flavour for p in images.plans(("training",))] == ["training"]
    assert plans[0].base.sources[0].parent == tmp_path / "cache" / "images" / "apt"
    with pytest.raises(ImagesError, match="unknown image 'gpu'"):
        images.plans(("gpu",))  # type: ignore[arg-type]


# -- errors ----------------------------------------------------------------------------------


def test_context_without_the_dockerfile_is_refused() -> None:
    with pytest.raises(ValueError, match=r"lacks docker/loopline\.Dockerfile"):
        plan.plan_runtime(version="0.1.0", base=_base(), context={"README.md": b""})


def test_dockerignore_must_be_an_allow_list() -> None:
    with pytest.raises(ValueError, match="must start with `\\*`"):
        plan.context_patterns("!loopline/\n")
    with pytest.raises(ValueError, match="must start with `\\*`"):
        plan.context_patterns("# only a comment\n")
    assert plan.context_patterns("# why\n*\n!a/\n!b.txt\n**/__pycache__\n") == ["a", "b.txt"]


def test_context_naming_a_missing_path_is_refused(tmp_path: Path) -> None:
    repo = _checkout(tmp_path)
    shutil.rmtree(repo / "monitoring")
    with pytest.raises(inputs.ImagesError, match="lists monitoring"):
        _context(repo)


STORE = Store(root=Path("/s/storage"), runroot=Path("/s/run"), nofile=1024, nproc=512)


def test_push_wants_host_and_port() -> None:
    image = plan.plan_runtime(version="0.1.0", base=_base(), context={plan.DOCKERFILE: b"FROM x\n"})
    for bad in ("", "registry.example/path"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            plan.push_commands(STORE, image, bad)


# -- commands --------------------------------------------------------------------------------


def test_build_command(tmp_path: Path) -> None:
    layer = _layer(_checkout(tmp_path), torch_index_url="http://i/cpu")
    argv = plan.build_command(
        STORE,
        layer.reference,
        dockerfile=Path("/ctx/Dockerfile"),
        build_args=layer.build_args,
        context_dir=Path("/ctx"),
        volumes=[(Path("/etc/pip.conf"), "/etc/pip.conf", True), (Path("/c"), "/var/c", False)],
    )
    assert argv[:5] == ["podman", "--root", "/s/storage", "--runroot", "/s/run"]
    assert argv[-1] == "/ctx"
    assert argv[argv.index("--file") + 1] == "/ctx/Dockerfile"
    assert argv[argv.index("--tag") + 1] == layer.reference
    build_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    assert build_args == sorted(f"{k}={v}" for k, v in layer.build_args.items())
    assert "TORCH_INDEX_URL=http://i/cpu" in build_args
    assert "--volume" in argv
    assert "/etc/pip.conf:/etc/pip.conf:ro" in argv
    assert "/c:/var/c" in argv
    assert "nofile=1024:1024" in argv
    assert "--no-cache" not in argv
    assert "--layers=true" in argv
    forced = plan.build_command(
        STORE,
        layer.reference,
        dockerfile=Path("/ctx/Dockerfile"),
        build_args={},
        context_dir=Path("/ctx"),
        volumes=[],
        no_cache=True,
        layers=False,
    )
    assert "--no-cache" in forced
    assert "--layers=false" in forced


def test_push_copies_from_the_store_under_the_content_tag_and_the_version() -> None:
    image = plan.plan_runtime(version="0.1.0", base=_base(), context={plan.DOCKERFILE: b"FROM x\n"})
    loopback = plan.push_commands(STORE, image, "127.0.0.1:5000")
    assert [argv[-1] for argv in loopback] == [
        f"docker://127.0.0.1:5000/loopline/runtime:{image.tag}",
        "docker://127.0.0.1:5000/loopline/runtime:0.1.0",
    ]
    assert all("--dest-tls-verify=false" in argv for argv in loopback)
    source = f"containers-storage:[overlay@/s/storage+/s/run]{image.reference}"
    assert all(argv[-2] == source for argv in loopback)
    remote = plan.push_commands(STORE, image, "registry.example:443")
    assert not any("--dest-tls-verify=false" in argv for argv in remote)
    assert plan.is_loopback("localhost:5000")
    assert not plan.is_loopback("10.0.0.1:5000")


def test_compose_commands_read_and_write_the_store() -> None:
    manifest, config = plan.inspect_commands(STORE, "localhost/loopline/runtime:x")
    source = "containers-storage:[overlay@/s/storage+/s/run]localhost/loopline/runtime:x"
    assert manifest == ["skopeo", "inspect", "--raw", source]
    assert config == ["skopeo", "inspect", "--raw", "--config", source]
    copy = plan.import_layout_command(STORE, Path("/l"), "training", "localhost/t:1")
    assert copy[-2:] == [
        "oci:/l:training",
        "containers-storage:[overlay@/s/storage+/s/run]localhost/t:1",
    ]
    check = plan.check_training_command(STORE, "localhost/t:1")
    assert check[check.index("--entrypoint") + 1 :][:2] == ["python", "localhost/t:1"]
    assert "import torch" in check[-1]
