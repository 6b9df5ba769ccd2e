"""The window detector in the model server: each row's verdict over its entity's last N readings.

Requests stay one row per entity; the server completes each row's window with the entity's
previous readings, kept in this replica's memory (`WindowHistory`, at most
`alarm_max_entities` entities, least recently seen forgotten first, the same bound the alarm
events keep). The readings are kept as requests arrive whichever version (champion or canary)
scores them, so a canary's windows are as complete as the champion's.

A row gets the window verdict when its window is full: the entity has N-1 earlier readings
here, all with every sensor. Otherwise (an entity's first N-1 readings, after a restart or
after being forgotten, or a missing sensor in the window) it keeps the per-row model's
verdict, and the `detector` output says which one answered ("window" | "dense"). With more
than one replica an entity's readings must all reach one replica (sticky routing on the entity
key, as for the alarm events): a replica that sees only some of them builds windows with gaps
(docs/serving.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loopline.models.windowing import DENSE, WINDOW, WindowHistory, window_features
from loopline.serving.scoring import ScoredBatch

DETECTOR_OUTPUT = "detector"
_WINDOW_B, _DENSE_B = WINDOW.encode(), DENSE.encode()
_VERDICT = ("anomaly_score", "threshold", "is_anomaly")


def window_history(bundles: Sequence[Any], *, max_entities: int) -> WindowHistory | None:
    """The history the loaded versions need (the longest window among them); None when no
    version has a window detector."""
    windowed = [b for b in bundles if getattr(b, "window", None) is not None]
    if not windowed:
        return None
    size = max(int(b.window_size) for b in windowed)
    return WindowHistory(size, len(windowed[0].feature_names), max_entities=max_entities)


def apply_window(
    bundle: Any,
    history: WindowHistory,
    entities: Sequence[str] | None,
    x: np.ndarray,
    scored: ScoredBatch,
) -> list[bytes]:
    """Keep the batch's readings, replace the verdict of rows with a full window by the window
    detector's (in `scored.outputs`) and return the `detector` output. Rows without an entity
    key (the request had no entity column) are one stream, entity ""."""
    keys = entities if entities is not None else [""] * x.shape[0]
    wins, _ = history.step(keys, x)
    window = getattr(bundle, "window", None)
    if window is None:
        return [_DENSE_B] * x.shape[0]
    tail = wins[:, wins.shape[1] - int(bundle.window_size) * x.shape[1] :]
    full = np.isfinite(tail).all(axis=1) & ~scored.fallback
    if full.any():
        answer = window.score(window_features(tail[full], x.shape[1]))
        for name in _VERDICT:
            merged = np.array(scored.outputs[name], copy=True)
            merged[full] = answer[name]
            scored.outputs[name] = merged
    return [_WINDOW_B if f else _DENSE_B for f in full.tolist()]
