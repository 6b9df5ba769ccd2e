"""Run every `benchmarks/bench_*.py` (or those named) and list the result files.

Each module has `main() -> Path` that measures, writes its JSON under results/ and returns it.
`make bench BENCH_ARGS="serving data"` runs bench_serving.py and bench_data.py only. Then the
performance table of docs/profiles/README.md is regenerated from the result files
(`benchmarks.performance_table`).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = argv or sorted(p.stem.removeprefix("bench_") for p in here.glob("bench_*.py"))
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        start = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.bench_{name}")
            path = module.main()
        except Exception as exc:  # one broken benchmark must not hide the others' results
            print(f"!! bench {name} failed: {exc!r}", flush=True)
            failed.append(name)
            continue
        print(f"   wrote {path} ({time.perf_counter() - start:.1f} s)", flush=True)
    from benchmarks.performance_table import main as performance_table

    print(f"   regenerated {performance_table()}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
