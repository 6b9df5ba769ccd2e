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
from scipy.special import smirnov
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
    p_value[tested] = np.clip(kolmogorov_sf(d[tested], np.round(en[tested])), 0, 1)
    return KSColumns(statistic, p_value, rows, tested)


_PI_SQUARED = np.pi**2
_PI_FOUR = np.pi**4
_PI_SIX = np.pi**6
_SQRT2PI = np.sqrt(2 * np.pi)
_SQRT3 = np.sqrt(3)
_MIN_LOG = -708


def kolmogorov_sf(d: np.ndarray, n: np.ndarray) -> np.ndarray:
    """scipy's `kstwo.sf(d, n)` (n integral), for many statistics at once.

    scipy evaluates it element by element in Python (`scipy.stats._ksstats._kolmogn`), which
    was the larger part of a window's test. For n > 140 and 1/n < d < 1/2 it picks an
    algorithm by n*d^2: 0 beyond 370, `2 * smirnov(n, d)` from 2.2 (a ufunc), and below that,
    unless d is tiny enough for the Durbin matrix, the Pelz-Good series, the usual case of a
    window that has not drifted. Those branches are evaluated here with scipy's expressions in
    scipy's order, vectorised over the statistics; every other case goes to `kstwo.sf`."""
    x = np.asarray(d, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = np.empty_like(x)
    t = n * x
    nxsquared = t * x
    series = (n > 140) & (t > 1.0) & (t < n - 1) & (x < 0.5)
    zero = series & (nxsquared >= 370.0)
    doubled = series & ~zero & (nxsquared >= 2.2)
    durbin = (n <= 100000) & (n * x**1.5 <= 1.4)
    pelz = series & (nxsquared < 2.2) & ~durbin
    rest = ~(zero | doubled | pelz)
    out[zero] = 0.0
    out[doubled] = np.clip(2 * smirnov(n[doubled], x[doubled]), 0.0, 1.0)
    out[pelz] = np.clip(1.0 - _pelz_good_cdf(n[pelz], x[pelz]), 0.0, 1.0)
    if rest.any():
        out[rest] = kstwo.sf(x[rest], n[rest])
    return out


def _pelz_good_cdf(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """`scipy.stats._ksstats._kolmogn_PelzGood(n, x, cdf=True)` for 0 < x < 1, vectorised.

    The series has ceil(16 z / pi) terms per statistic; one loop runs the longest, each
    statistic taking only its own terms, in scipy's order (k from its last term down to 1)."""
    z = np.sqrt(n) * x
    zsquared, zthree, zfour, zsix = z**2, z**3, z**4, z**6
    qlog = -_PI_SQUARED / 8 / zsquared
    live = qlog >= _MIN_LOG  # below: CDF 0, as in scipy
    q = np.exp(qlog)
    maxk = np.where(live, np.ceil(16 * z / np.pi), 0).astype(np.int64)
    k1a = -zsquared
    k1b = _PI_SQUARED / 4
    k2a = 6 * zsix + 2 * zfour
    k2b = (2 * zfour - 5 * zsquared) * _PI_SQUARED / 4
    k2c = _PI_FOUR * (1 - 2 * zsquared) / 16
    k3d = _PI_SIX * (5 - 30 * zsquared) / 64
    k3c = _PI_FOUR * (-60 * zsquared + 212 * zfour) / 16
    k3b = _PI_SQUARED * (135 * zfour - 96 * zsix) / 4
    k3a = -30 * zsix - 90 * z**8
    q2 = np.exp(-_PI_SQUARED / 2 / zsquared)
    sqrt3z = _SQRT3 * z
    terms = np.zeros((4, z.shape[0]))
    k2extra = np.zeros_like(z)
    k3extra = np.zeros_like(z)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        for k in range(int(maxk.max(initial=0)), 0, -1):
            on = k <= maxk
            m = 2 * k - 1
            msquared, mfour, msix = m**2, m**4, m**6
            coeffs = np.stack(
                [
                    np.ones_like(z),
                    k1a + k1b * msquared,
                    k2a + k2b * msquared + k2c * mfour,
                    k3a + k3b * msquared + k3c * mfour + k3d * msix,
                ]
            )
            terms = np.where(on, terms * np.power(q, 8 * k) + coeffs, terms)
            ksquared = k**2
            kspi = np.pi * k
            qpower = q2**ksquared
            k2extra = np.where(on, k2extra + ksquared * qpower, k2extra)
            k3extra = np.where(
                on, k3extra + (sqrt3z + kspi) * (sqrt3z - kspi) * ksquared * qpower, k3extra
            )
        terms *= q
        terms *= _SQRT2PI
        terms /= np.stack([z, 6 * zfour, 72 * z**7, 6480 * z**10])
        k2extra *= _PI_SQUARED * _SQRT2PI / (-36 * zthree)
        terms[2] += k2extra
        k3extra *= _PI_SQUARED * _SQRT2PI / (216 * zsix)
        terms[3] += k3extra
        terms /= np.power(n[None, :] * 1.0, (np.arange(4) / 2.0)[:, None])
        cdf = ((terms[0] + terms[1]) + terms[2]) + terms[3]
    return np.where(live, cdf, 0.0)


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
