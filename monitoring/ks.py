"""The two-sample Kolmogorov-Smirnov test of every feature of a window against a reference that
is sorted once, when it loads.

scipy's `ks_2samp` (what alibi-detect's `KSDrift` calls per feature) re-sorts the reference
and merges it with the window on every call, and most of its time per feature is argument
handling around that. Here the reference columns are sorted at load; a window costs one sort
of its own columns and binary searches of its values into the reference. The statistic is
evaluated at the window's values only, which is enough: the difference of the two empirical
CDFs changes only at data points, and between two window values it is largest just before the
next window value and smallest at the previous one, so the extremes over the reference's points
are the counts `searchsorted(reference, value, "left")`. Every candidate is the same
`count / n_ref - count / n_live` scipy forms, so the statistic is bit-identical, and the
p-value is scipy's asymptotic one (`method="asymp"`, as alibi-detect asks for), from the same
`kstwo.sf(d, round(en))`, evaluated for all features in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import kstwo


@dataclass(frozen=True)
class SortedReference:
    """Each feature's non-missing reference values, ascending, and how many there are."""

    columns: tuple[np.ndarray, ...]
    sizes: np.ndarray

    @classmethod
    def of(cls, reference: np.ndarray) -> SortedReference:
        arr = np.asarray(reference, dtype=np.float64)
        columns = tuple(np.sort(col[np.isfinite(col)]) for col in arr.T)
        sizes = np.array([c.size for c in columns], dtype=np.int64)
        return cls(columns=columns, sizes=sizes)

    @property
    def width(self) -> int:
        return len(self.columns)


@dataclass(frozen=True)
class KSColumns:
    """Per feature: KS distance, p-value (1 when untested), non-missing live rows, tested."""

    statistic: np.ndarray
    p_value: np.ndarray
    rows: np.ndarray
    tested: np.ndarray


def _live_counts(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sorted ascending (NaN last): how many values of its row are <= and < each value.

    The same as `searchsorted(row, row, "right" / "left")` for every row at once: ties are runs,
    and a value's counts are the end and the start of its run."""
    n = cols.shape[1]
    differs = cols[:, 1:] != cols[:, :-1]  # NaN != NaN: a NaN never joins a run
    index = np.arange(1, n + 1, dtype=np.int64)
    ends = np.where(np.concatenate([differs, np.ones((cols.shape[0], 1), bool)], axis=1), index, n)
    right = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    starts = np.where(
        np.concatenate([np.ones((cols.shape[0], 1), bool), differs], axis=1), index - 1, 0
    )
    left = np.maximum.accumulate(starts, axis=1)
    return right, left


def ks_columns(reference: SortedReference, window: np.ndarray, *, min_rows: int) -> KSColumns:
    """Two-sided KS of each window column (non-finite values left out) against the reference.

    A feature with fewer than `min_rows` values on either side is untested: distance 0,
    p-value 1, never NaN."""
    x = np.asarray(window, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != reference.width:
        raise ValueError(f"window must have shape [rows, {reference.width}], got {list(x.shape)}")
    width, n = reference.width, x.shape[0]
    statistic = np.zeros(width, dtype=np.float64)
    p_value = np.ones(width, dtype=np.float64)
    cols = np.array(x.T, order="C")  # the one copy of the window: features as rows
    finite = np.isfinite(cols)
    rows = finite.sum(axis=1)
    tested = (rows >= max(min_rows, 1)) & (reference.sizes >= max(min_rows, 1))
    if n == 0 or not tested.any():
        return KSColumns(statistic, p_value, rows, tested)
    if not finite.all():
        cols[~finite] = np.nan
    cols.sort(axis=1)
    live_right, live_left = _live_counts(cols)
    ref_right = np.zeros_like(live_right)
    ref_left = np.zeros_like(live_left)
    for f in np.flatnonzero(tested):
        live, ref = cols[f, : rows[f]], reference.columns[f]
        right = np.searchsorted(ref, live, side="right")
        ref_right[f, : rows[f]] = right
        # "left" differs from "right" only where the reference holds the value itself; a
        # second binary search only for those (sensor values rarely tie across the samples).
        left = right.copy()
        tied = right > 0
        tied[tied] = ref[right[tied] - 1] == live[tied]
        if tied.any():
            left[tied] = np.searchsorted(ref, live[tied], side="left")
        ref_left[f, : rows[f]] = left
    n_ref = reference.sizes[:, None]
    n_live = rows[:, None]
    valid = np.arange(n)[None, :] < n_live
    # F_ref - F_live at each live value, and just before it (the largest over reference points
    # in between). Padding is 0: that value is always among the candidates, and it changes
    # neither extreme the statistic takes from them.
    with np.errstate(divide="ignore", invalid="ignore"):
        at = np.where(valid, ref_right / n_ref - live_right / n_live, 0.0)
        before = np.where(valid, ref_left / n_ref - live_left / n_live, 0.0)
    below = np.clip(-at.min(axis=1), 0, 1)
    above = np.maximum(at.max(axis=1), before.max(axis=1))
    d = np.where(below > above, below, above)
    big = np.maximum(reference.sizes, rows).astype(np.float64)
    small = np.minimum(reference.sizes, rows).astype(np.float64)
    en = big * small / (big + small)
    statistic[tested] = d[tested]
    p_value[tested] = np.clip(kstwo.sf(d[tested], np.round(en[tested])), 0, 1)
    return KSColumns(statistic, p_value, rows, tested)


def corrected_threshold(p_values: np.ndarray, p_value: float, correction: str) -> float:
    """The per-feature p-value threshold after alibi-detect's batch correction, as one number.

    Bonferroni: `p_value / features`. FDR (Benjamini-Hochberg step-up, alibi-detect's `fdr`):
    the highest rung `q * i / n` a sorted p-value is below; when none is, alibi-detect returns
    the whole ladder, no feature passes, and its strictest rung (q / n) is the honest single
    threshold."""
    n = p_values.shape[0]
    if correction == "bonferroni":
        return p_value / n
    if correction != "fdr":
        raise ValueError(f"correction {correction!r} is unknown; choose bonferroni or fdr")
    ladder = p_value * (np.arange(n) + 1) / n
    below = np.sort(p_values) < ladder
    if not below.any():
        return float(ladder.min())
    return float(ladder[np.flatnonzero(below).max()])
