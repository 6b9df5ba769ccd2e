"""Reading the inputs of the image build off this machine: the build context, the apt
sources mmdebstrap gets, and the pip configuration the build's pip gets.

The host's own apt sources and pip configuration are used so the images come from wherever
this machine installs its packages from; no archive or index is named in the project.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from loopline.images.errors import ImagesError

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")
# pip settings that would redirect where the build's pip installs or caches; the Dockerfile
# decides those.
_PIP_KEYS_NOT_PASSED = {"cache-dir", "no-cache-dir", "target", "prefix", "root", "user"}
SUITE = "bookworm"


def repo_root(start: Path | None = None) -> Path:
    """The checkout the images are built from (the one holding docker/loopline.Dockerfile)."""
    here = (start or Path(__file__)).resolve()
    for candidate in [here, *here.parents]:
        if (candidate / "docker" / "loopline.Dockerfile").is_file() and (
            candidate / "pyproject.toml"
        ).is_file():
            return candidate
    raise ImagesError(
        "images are built from a Loopline checkout (docker/loopline.Dockerfile and "
        "pyproject.toml); run from one or pass --repo"
    )


def read_context(repo: Path, patterns: list[str]) -> dict[str, bytes]:
    """Every file the build context holds, by path relative to the checkout."""
    files: dict[str, bytes] = {}
    for pattern in patterns:
        path = repo / pattern
        if path.is_file():
            files[pattern] = path.read_bytes()
            continue
        if not path.is_dir():
            raise ImagesError(f"the build context lists {pattern}, which is not in {repo}")
        for file in sorted(path.rglob("*")):
            rel = file.relative_to(repo)
            if any(part in _SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
                continue
            if file.is_file() and not file.name.endswith(_SKIP_SUFFIXES):
                files[rel.as_posix()] = file.read_bytes()
    return files


def package_version(repo: Path) -> str:
    text = (repo / "loopline" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ImagesError(f"no __version__ in {repo / 'loopline' / '__init__.py'}")
    return match.group(1)


def extras(repo: Path) -> list[str]:
    """The optional-dependency extras the package defines (static or setuptools-dynamic)."""
    data = tomllib.loads((repo / "pyproject.toml").read_text())
    project = data.get("project", {})
    dynamic = data.get("tool", {}).get("setuptools", {}).get("dynamic", {})
    return sorted(project.get("optional-dependencies", dynamic.get("optional-dependencies", {})))


def requirement_lists(repo: Path) -> tuple[list[str], list[str]]:
    """(runtime, training) requirement lists, as docker/requirements.py reads them off
    pyproject.toml: the runtime image's (without torch) and the one with the `training`
    extra. The torch layer is the closure of the second over the first."""
    script = repo / "docker" / "requirements.py"
    spec = importlib.util.spec_from_file_location("loopline_docker_requirements", script)
    if spec is None or spec.loader is None:
        raise ImagesError(f"cannot load {script}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pyproject = repo / "pyproject.toml"
    wanted = ["training"] if "training" in extras(repo) else []
    runtime: list[str] = module.requirements(pyproject, [], {"torch"})
    training: list[str] = module.requirements(pyproject, wanted, set())
    return runtime, training


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
        elif raw[0].isspace() and key:
            current[key] += "\n" + raw
        elif ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip()
            current[key] = value.strip()
    return stanzas


def _one_line(line: str) -> dict[str, str] | None:
    """A one-line `deb [options] URI SUITE COMPONENT...` entry as a deb822 stanza."""
    line = line.split("#", 1)[0].strip()
    match = re.match(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
    if match is None:
        return None
    kind, options, uri, suite, components = match.groups()
    stanza = {"Types": kind, "URIs": uri, "Suites": suite, "Components": components}
    for option in (options or "").split():
        name, _, value = option.partition("=")
        if name == "signed-by":
            stanza["Signed-By"] = value
    return stanza


def debian_sources(apt_dir: Path = Path("/etc/apt")) -> str:
    """The host's binary apt sources for bookworm (and its -updates/-security suites), as one
    deb822 file. Sources of other suites (third-party repositories) are left out: the base
    image is Debian's."""
    stanzas: list[dict[str, str]] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            stanzas += _stanzas(path.read_text())
        elif path.suffix == ".list" or path.name == "sources.list":
            stanzas += [s for s in map(_one_line, path.read_text().splitlines()) if s]
    kept: list[str] = []
    for stanza in stanzas:
        if stanza.get("Enabled", "yes").lower() == "no" or "deb" not in stanza["Types"].split():
            continue
        suites = [s for s in stanza.get("Suites", "").split() if s.split("-")[0] == SUITE]
        if not suites:
            continue
        stanza = {**stanza, "Types": "deb", "Suites": " ".join(suites)}
        kept.append("\n".join(f"{key}: {value}" for key, value in stanza.items()))
    if not kept:
        raise ImagesError(
            f"no apt source for Debian {SUITE} under {apt_dir}: the base image is made from "
            f"the host's apt sources (a `deb` entry for suite {SUITE})"
        )
    return "\n\n".join(kept) + "\n"


@dataclass(frozen=True)
class PipConfig:
    """The host's pip settings as a pip.conf for the build, and the host files they name."""

    conf: str
    files: tuple[Path, ...]


def parse_pip_config(listing: str) -> PipConfig:
    """Turn `pip config list` output (`section.key='value'`, `:env:.key='value'`) into a
    pip.conf. Values that are absolute paths of existing files or folders (a CA bundle, a
    find-links folder) are mounted into the build at the same path."""
    sections: dict[str, dict[str, str]] = {}
    files: list[Path] = []
    for line in listing.splitlines():
        name, sep, raw = line.partition("=")
        if not sep or "." not in name:
            continue
        section, _, key = name.rpartition(".")
        section = "global" if section in {":env:", ""} else section
        if key in _PIP_KEYS_NOT_PASSED:
            continue
        try:
            value = str(ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            value = raw.strip().strip("'\"")
        sections.setdefault(section, {})[key] = value
        for word in value.split():
            if word.startswith("/") and Path(word).exists() and Path(word) not in files:
                files.append(Path(word))
    conf = ""
    for section, values in sections.items():
        conf += f"[{section}]\n"
        for key, value in values.items():
            conf += f"{key} = " + value.replace("\n", "\n    ") + "\n"
    return PipConfig(conf=conf, files=tuple(files))


def host_pip_config() -> PipConfig:
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImagesError(f"`pip config list` failed: {result.stderr.strip()}")
    return parse_pip_config(result.stdout)
