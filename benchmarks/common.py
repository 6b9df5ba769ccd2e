"""What every benchmark shares: where results go and what they record about the machine.

A benchmark reports ratios against a peer or baseline measured in the same run, never a bare
number compared with a constant, because this machine's speed varies from run to run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write `results/<name>.json` with the machine and time it was measured on."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    doc = {"benchmark": name, "measured_at": datetime.now(UTC).isoformat(), "machine": machine()}
    doc.update(payload)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/mean in milliseconds from samples in seconds."""
    arr = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p90_ms": float(np.percentile(arr, 90)),
        "p99_ms": float(np.percentile(arr, 99)),
        "mean_ms": float(arr.mean()),
        "n": int(arr.size),
    }


def time_calls(fn: Callable[[], object], *, repeat: int, warmup: int = 3) -> list[float]:
    """Wall time of each of `repeat` calls, after `warmup` unmeasured ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out
