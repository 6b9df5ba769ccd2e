"""The window detector's inputs: each reading with its entity's previous readings, flattened.

The window detector is the dense autoencoder run over rolling-window features of one entity's
last N readings: each sensor's newest reading, its mean and its standard deviation over the
window (`window_features`), so a fault that shows in how readings move (a stuck sensor, a
drift, a sensor gone loose) is visible where one reading alone looks normal. It reuses the
numpy scoring kernel as is: serving needs no new runtime and no torch. (The autoencoder over
the N x F raw readings laid side by side was measured first and missed most faults: the
newest reading is one N-th of its error; docs/training.md has the table.)

An entity's first N-1 readings have no full window; they keep the per-row (dense) verdict,
and the `windowed` mask says which rows got which. The same functions assemble windows in
training, in the evaluation and (through `WindowHistory`, which adds the readings of earlier
requests, one-row-per-entity requests in one vectorised step) in the model server, so the
three see the same windows (a unit test holds the server's to `windows_of`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

WINDOW_KEY = "window"  # bundle.json: the window scorer and its size
DENSE, WINDOW = "dense", "window"


def window_feature_names(names: Sequence[str], size: int) -> list[str]:
    """The window scorer's inputs: each sensor's reading, then its mean and its standard
    deviation over the window (`window_features`)."""
    return [
        *names,
        *(f"{name}:mean{size}" for name in names),
        *(f"{name}:std{size}" for name in names),
    ]


def window_features(windows: np.ndarray, n_features: int) -> np.ndarray:
    """[r, 3F] inputs of the window scorer from full windows [r, size*F]: the newest reading
    (a fault in it weighs as much as in the per-row model), the window's mean (a slow drift
    or an offset) and its standard deviation (a stuck sensor has none, a loose one too much).
    """
    w = windows.reshape(windows.shape[0], -1, n_features)
    return np.ascontiguousarray(
        np.concatenate([w[:, -1], w.mean(axis=1), w.std(axis=1)], axis=1), dtype=np.float32
    )


def entity_groups(entities: Sequence[Any]) -> dict[Any, list[int]]:
    """Row positions per entity, in the order the rows come (time order within an entity)."""
    groups: dict[Any, list[int]] = {}
    for row, key in enumerate(entities):
        groups.setdefault(key, []).append(row)
    return groups


def windows_of(entities: Sequence[Any], x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(windows [r, size*F], full [r]) for rows in time order within each entity.

    Row i's window is its entity's `size` readings ending at row i; rows of other entities in
    between do not count. `full` is False for an entity's first size-1 rows (their window is
    left NaN) and for windows with a missing value."""
    if x.ndim != 2 or len(entities) != x.shape[0]:
        raise ValueError(f"{len(entities)} entity keys for rows of shape {x.shape}")
    if size < 1:
        raise ValueError(f"window size must be at least 1, got {size}")
    n, f = x.shape
    out = np.full((n, size, f), np.nan, dtype=np.float32)
    for rows in entity_groups(entities).values():
        idx = np.asarray(rows)
        for lag in range(size):
            if lag < len(idx):
                out[idx[lag:], size - 1 - lag] = x[idx[: len(idx) - lag]]
    flat = out.reshape(n, size * f)
    return flat, np.isfinite(flat).all(axis=1)


@dataclass
class _Recent:
    readings: np.ndarray  # [size-1, F], oldest first; NaN before the entity had that many


class WindowHistory:
    """The last size-1 readings of each entity a server has seen, to complete the window of
    the next one. At most `max_entities` entities: the least recently seen is forgotten first
    and starts afresh (dense verdicts) when it comes back."""

    def __init__(self, size: int, n_features: int, *, max_entities: int) -> None:
        if size < 1 or max_entities < 1:
            raise ValueError(
                f"window size and max_entities must be at least 1, got {size}, {max_entities}"
            )
        self.size, self.n_features, self.max_entities = size, n_features, max_entities
        self._entities: OrderedDict[Any, _Recent] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entities)

    def step(self, entities: Sequence[Any], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`windows_of` this batch as if it followed every reading seen before, then keep
        its readings. Request order is time order within an entity."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"rows of shape {x.shape}; expected [n, {self.n_features}]")
        keep = self.size - 1
        if x.shape[0] == 0:
            return np.empty((0, self.size * self.n_features), np.float32), np.empty(0, bool)
        groups = entity_groups(entities)
        if len(groups) == x.shape[0]:  # one row per entity (as a line sends them): vectorised
            recalled = [self._recall(key) for key in groups]
            stacked = np.stack([r.readings for r in recalled])
            wins3 = np.concatenate([stacked, x[:, np.newaxis, :].astype(np.float32)], axis=1)
            for recent, window in zip(recalled, wins3, strict=True):
                recent.readings = window[1:].copy()
            flat = wins3.reshape(x.shape[0], self.size * self.n_features)
            return flat, np.isfinite(flat).all(axis=1)
        parts: list[np.ndarray] = []
        keys: list[Any] = []
        slots: list[np.ndarray] = []
        recents: list[_Recent] = []
        for key, rows in groups.items():
            recent = self._recall(key)
            recents.append(recent)
            parts += [recent.readings, x[rows]]
            keys += [key] * (keep + len(rows))
            slots.append(np.arange(keep, keep + len(rows)))
        stacked = np.concatenate(parts) if parts else x[:0]
        wins, full = windows_of(keys, stacked, self.size)
        out = np.empty((x.shape[0], self.size * self.n_features), dtype=np.float32)
        done = np.empty(x.shape[0], dtype=bool)
        offset = 0
        for rows, slot, recent in zip(groups.values(), slots, recents, strict=True):
            out[rows] = wins[offset + slot]
            done[rows] = full[offset + slot]
            block = stacked[offset : offset + keep + len(rows)]
            recent.readings = block[len(block) - keep :].copy()
            offset += keep + len(rows)
        return out, done

    def _recall(self, key: Any) -> _Recent:
        found = self._entities.get(key)
        if found is None:
            empty = np.full((self.size - 1, self.n_features), np.nan, dtype=np.float32)
            found = self._entities[key] = _Recent(empty)
            if len(self._entities) > self.max_entities:
                self._entities.popitem(last=False)
        else:
            self._entities.move_to_end(key)
        return found


def merge_verdicts(
    dense: dict[str, np.ndarray], window: dict[str, np.ndarray], full: np.ndarray
) -> dict[str, np.ndarray]:
    """The window scorer's answer where the window is full, the dense one elsewhere.

    `window` holds answers for the full rows only (in order)."""
    out = {}
    for name, values in dense.items():
        merged = np.array(values, copy=True)
        if name in window and full.any():
            merged[full] = window[name]
        out[name] = merged
    return out


def score_sequence(
    bundle: Any, entities: Sequence[Any], timestamps: Any, x: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(answers, windowed) of `bundle`'s detector for rows in any order: windows follow each
    entity's readings in timestamp order; rows without a full window keep the dense answer
    (`windowed` False). `bundle` is a `ModelBundle`."""
    dense: dict[str, np.ndarray] = bundle.score(x)
    if bundle.window is None:
        return dense, np.zeros(x.shape[0], dtype=bool)
    import pandas as pd  # the evaluation's dependency; serving never calls this

    keys = pd.DataFrame({"e": np.asarray(entities), "t": np.asarray(timestamps)})
    order = keys.sort_values(["e", "t"], kind="stable").index.to_numpy()
    wins, full_sorted = windows_of(list(np.asarray(entities)[order]), x[order], bundle.window_size)
    full = np.empty_like(full_sorted)
    full[order] = full_sorted
    ordered = wins[full_sorted][np.argsort(order[full_sorted])]
    window = bundle.window.score(window_features(ordered, x.shape[1]))
    return merge_verdicts(dense, window, full), full
