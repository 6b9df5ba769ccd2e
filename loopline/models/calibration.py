"""Thresholds from held-out normal scores: a quantile, or a false-alarm budget.

A quantile (`training.thresholdQuantile`) puts about `1 - q` of normal rows over the threshold
on average, half the time more. A budget (`alarms.maxFalseAlarmRate`, alpha) is a promise, so
the threshold is chosen to keep it with confidence: with n held-out normal scores sorted
ascending, the threshold is the j-th, alarming on scores above it. For a new normal row from
the same distribution the false-alarm rate is then 1 - U(j), U(j) the j-th of n uniform order
statistics, and it exceeds alpha exactly when fewer than j of the n scores fall below the
(1 - alpha) quantile of the distribution: P = 1 - BinomCDF(j - 1; n, 1 - alpha). So j is the
smallest with BinomCDF(j - 1; n, 1 - alpha) >= `CONFIDENCE`: the rate stays within the budget
with 95 % confidence over the draw of the calibration rows (a tolerance bound, distribution
free; the plain conformal j = ceil((n + 1)(1 - alpha)) only bounds the *expected* rate, which
the newest rows then miss about half the time).

The price is a few held-out rows: the budget needs n with (1 - alpha)^n <= 1 - CONFIDENCE,
about 3 / alpha rows (300 for 1 %), else there is no such j and training says so.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

CONFIDENCE = 0.95


class BudgetError(ValueError):
    """Too few held-out normal rows to promise the false-alarm budget."""


def rows_needed(max_false_alarm_rate: float, confidence: float = CONFIDENCE) -> int:
    """Fewest held-out normal rows that can promise `max_false_alarm_rate`."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - max_false_alarm_rate))


def budget_rank(n: int, max_false_alarm_rate: float, confidence: float = CONFIDENCE) -> int:
    """The 1-based rank j of the threshold among n sorted held-out scores (see module doc)."""
    if not 0 < max_false_alarm_rate < 1:
        raise ValueError(f"alarms.maxFalseAlarmRate must be in (0, 1), got {max_false_alarm_rate}")
    j = int(binom.ppf(confidence, n, 1 - max_false_alarm_rate)) + 1
    # ppf is the smallest j - 1 whose CDF reaches the confidence; guard its float edge
    while j > 1 and binom.cdf(j - 2, n, 1 - max_false_alarm_rate) >= confidence:
        j -= 1
    if j > n:
        raise BudgetError(
            f"alarms.maxFalseAlarmRate {max_false_alarm_rate:g} needs at least "
            f"{rows_needed(max_false_alarm_rate, confidence)} held-out normal rows to promise "
            f"with {confidence:.0%} confidence; this run has {n}. Widen "
            "training.trainingWindowDays (or the data), or raise the budget"
        )
    return j


def threshold(
    scores: np.ndarray, quantile: float, max_false_alarm_rate: float | None = None
) -> float:
    """The alarm threshold (alarm: score > threshold) from held-out normal `scores`: the
    budget's when one is set, else the `quantile`."""
    values = np.sort(np.asarray(scores, dtype=np.float64))
    if len(values) == 0:
        raise ValueError("no held-out normal scores to calibrate a threshold on")
    if max_false_alarm_rate is None:
        return float(np.quantile(values, quantile))
    return float(values[budget_rank(len(values), max_false_alarm_rate) - 1])
