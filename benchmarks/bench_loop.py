"""The loop's wall time: from the recipe change to the new champion serving, by stage.

Runs the demo scenario (quick sizes, no report, no dead-sensor act) on its own local control
plane and reads the stage times off the run's record:

- detection: recipe change -> the monitor's retraining request is on the Model;
- training: request -> the run reaches the gate's steps (features, data quality, train,
  evaluate);
- gate: the gate's steps (compare with the champion on the same fresh data, register) -> the
  decision recorded on the Model;
- rollout: gate -> the canary finished and the new champion serves all traffic.

Ratios are against the first training run of the same demo (same data sizes, same machine),
so the numbers mean something on a slower or busier machine too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import write_results
from loopline.demo.scenario import Demo
from loopline.demo.settings import DemoSettings


def main() -> Path:
    with tempfile.TemporaryDirectory(prefix="loopline-bench-loop-") as tmp:
        settings = DemoSettings(
            state_dir=Path(tmp) / "state", baseline_seconds=10.0, dead_sensor_seconds=0.0
        ).quick()
        result = Demo(settings, report=False).run()
    rec = result.record
    stages = rec.stage_durations()
    runs = sorted(rec.runs.values(), key=lambda r: r.started_t or 0.0)
    first = next((r for r in runs if r.trigger != "drift"), None)
    first_s = (
        first.ended_t - first.started_t
        if first and first.started_t is not None and first.ended_t is not None
        else None
    )
    ratios: dict[str, Any] = {}
    if first_s:
        ratios = {
            f"{k.removesuffix('_s')}_over_first_training": round(v / first_s, 3)
            for k, v in stages.items()
            if v is not None
        }
    total = stages.get("total_s")
    shares = {
        f"{k.removesuffix('_s')}_share": round(v / total, 3)
        for k, v in stages.items()
        if v is not None and total and k != "total_s"
    }
    stats = rec.traffic_stats(window_s=max(rec.ended_t or 1.0, 1.0), now=rec.ended_t)
    return write_results(
        "loop",
        {
            "completed": result.completed,
            "problems": result.problems,
            "settings": settings.model_dump(
                mode="json",
                include={
                    "machines",
                    "history_days",
                    "epochs",
                    "rate",
                    "window_size",
                    "canary_step_seconds",
                    "recipe_shift",
                },
            ),
            "stages_s": stages,
            "first_training_s": first_s,
            "ratios": ratios,
            "shares_of_total": shares,
            "traffic": {
                "requests": stats.requests,
                "errors": stats.errors,
                "p50_ms": stats.p50_ms,
                "p99_ms": stats.p99_ms,
            },
            "leftover_processes": result.leftovers,
        },
    )


if __name__ == "__main__":
    print(main())
