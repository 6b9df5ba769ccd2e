"""Reading the image build's inputs off a machine (loopline.images.inputs): apt sources for
the Debian base, pip configuration for the build's pip, the version and the extras.

The apt and pip inputs are written to temporary folders here, in the shapes Debian and pip
produce, so the tests do not depend on how this machine is configured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loopline.images import inputs
from loopline.images.errors import ImagesError

REPO_ROOT = Path(__file__).resolve().parents[2]


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def test_one_line_and_deb822_sources_become_one_deb822_file(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        {
            "sources.list": (
                "# a comment\n"
                "deb [signed-by=/usr/share/keyrings/k.gpg] http://m.invalid/debian bookworm main\n"
                "deb-src http://m.invalid/debian bookworm main\n"
                "deb http://m.invalid/debian bullseye main\n"
            ),
            "sources.list.d/security.sources": (
                "Types: deb deb-src\nURIs: http://m.invalid/debian-security\n"
                "Suites: bookworm-security trixie-security\nComponents: main\n"
            ),
            "sources.list.d/other.sources": (
                "Types: deb\nURIs: http://other.invalid/apt\nSuites: stable\nComponents: main\n"
            ),
            "sources.list.d/off.sources": (
                "Enabled: no\nTypes: deb\nURIs: http://off.invalid\nSuites: bookworm\n"
                "Components: main\n"
            ),
        },
    )
    text = inputs.debian_sources(apt)
    stanzas = text.strip().split("\n\n")
    assert stanzas == [
        "Types: deb\nURIs: http://m.invalid/debian\nSuites: bookworm\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/k.gpg",
        "Types: deb\nURIs: http://m.invalid/debian-security\nSuites: bookworm-security\n"
        "Components: main",
    ]


def test_no_bookworm_source_is_an_error_that_says_so(tmp_path: Path) -> None:
    apt = _apt(tmp_path, {"sources.list": "deb http://m.invalid/debian trixie main\n"})
    with pytest.raises(ImagesError, match="no apt source for Debian bookworm"):
        inputs.debian_sources(apt)


def test_pip_config_keeps_the_index_and_mounts_the_files_it_names(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("cert")
    listing = (
        "global.index-url='http://index.invalid/simple'\n"
        f"global.cert='{bundle}'\n"
        "global.cache-dir='/root/.cache/pip'\n"
        ":env:.extra-index-url='http://a.invalid/simple http://b.invalid/simple'\n"
        "install.trusted-host='index.invalid'\n"
        "not a setting\n"
    )
    config = inputs.parse_pip_config(listing)
    assert config.conf == (
        "[global]\n"
        "index-url = http://index.invalid/simple\n"
        f"cert = {bundle}\n"
        "extra-index-url = http://a.invalid/simple http://b.invalid/simple\n"
        "[install]\n"
        "trusted-host = index.invalid\n"
    )
    assert config.files == (bundle,)


def test_version_and_extras_of_this_checkout() -> None:
    assert inputs.package_version(REPO_ROOT).count(".") == 2
    assert {"dev", "training"} <= set(inputs.extras(REPO_ROOT))
    assert inputs.repo_root(REPO_ROOT / "loopline" / "images") == REPO_ROOT


def test_repo_root_outside_a_checkout_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImagesError, match=r"docker/loopline\.Dockerfile"):
        inputs.repo_root(tmp_path)
