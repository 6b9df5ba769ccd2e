"""Thresholds for a false-alarm budget: the rank arithmetic, the refusal with too few rows,
and that the budget holds on held-out normal data (where a plain quantile misses it half the
time)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from loopline.models.baseline import RangeBaseline
from loopline.models.calibration import (
    CONFIDENCE,
    BudgetError,
    budget_rank,
    rows_needed,
    threshold,
)
from loopline.models.pca_baseline import PcaBaseline


@pytest.mark.parametrize(("n", "alpha"), [(300, 0.01), (1000, 0.01), (5000, 0.002), (200, 0.1)])
def test_rank_is_the_smallest_that_keeps_the_budget_with_confidence(n: int, alpha: float) -> None:
    j = budget_rank(n, alpha)
    # P(rate > alpha) = P(fewer than j of n scores below the 1 - alpha quantile)
    assert binom.cdf(j - 1, n, 1 - alpha) >= CONFIDENCE
    assert binom.cdf(j - 2, n, 1 - alpha) < CONFIDENCE
    assert j <= n


def test_rows_needed_and_the_error_naming_the_field() -> None:
    assert rows_needed(0.01) == 299  # 0.99^299 <= 0.05 < 0.99^298
    assert budget_rank(299, 0.01) == 299  # the largest score: nothing held out alarms
    with pytest.raises(BudgetError, match=r"alarms.maxFalseAlarmRate 0.01 needs at least 299"):
        budget_rank(298, 0.01)
    with pytest.raises(BudgetError, match="this run has 10"):
        threshold(np.arange(10.0), 0.99, 0.01)


def test_without_a_budget_the_quantile_rule_is_unchanged() -> None:
    scores = np.random.default_rng(0).normal(size=1001)
    assert threshold(scores, 0.99) == pytest.approx(float(np.quantile(scores, 0.99)))


def test_the_budget_holds_on_held_out_normal_rows() -> None:
    """Uniform scores: a threshold t has a true false-alarm rate of exactly 1 - t."""
    rng = np.random.default_rng(7)
    alpha, n, trials = 0.01, 2000, 400
    budget_over = quantile_over = 0
    for _ in range(trials):
        calibration = rng.random(n)
        budget_over += (1 - threshold(calibration, 0.99, alpha)) > alpha
        quantile_over += (1 - threshold(calibration, 1 - alpha)) > alpha
    # 5 % expected; 9 % is 3.6 standard deviations of 400 trials away
    assert budget_over / trials <= 0.09
    assert quantile_over / trials > 0.3  # the quantile only hits the budget on average


def test_both_baselines_meet_the_budget_on_fresh_normal_rows() -> None:
    """Correlated normal readings; each draw of calibration rows gives a threshold, and
    its false-alarm rate on many fresh rows stays within the budget for ~95 % of draws."""
    rng = np.random.default_rng(1)
    cov = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.1], [0.2, 0.1, 1.0]])

    def normal(n: int) -> np.ndarray:
        return rng.multivariate_normal(np.zeros(3), cov, size=n).astype(np.float32)

    budget, draws = 0.02, 30
    for kind in (RangeBaseline, PcaBaseline):
        rates = []
        for _ in range(draws):
            model = kind.fit(normal(3000), normal(3000), 0.5, max_false_alarm_rate=budget)
            rates.append(float((model.score(normal(20000)) > model.threshold).mean()))
        over = sum(r > budget for r in rates)
        assert over <= 5, (kind.__name__, rates)  # 1.5 expected; six or more: p < 0.5 %
        assert 0.01 < float(np.mean(rates)) < budget, kind.__name__


def test_training_calibrates_all_four_thresholds_for_the_budget() -> None:
    """Same data and seed, so the same networks: the budget's thresholds sit above the
    (1 - budget) quantile's (it promises, the quantile only averages), for every detector."""
    from loopline.data.generator import GeneratorConfig, generate
    from loopline.data.schema import factory_schema
    from loopline.models.training import train_bundle
    from loopline.types.alarms import AlarmPolicy
    from loopline.types.common import Task
    from loopline.types.policy import TrainingParams

    df, _ = generate(
        GeneratorConfig(machines=2, days=2, interval_seconds=60, seed=5, fault_fraction=0.05)
    )
    roles = factory_schema().roles(Task.ANOMALY_DETECTION)
    params = TrainingParams(epochs=1, batch_size=256, threshold_quantile=0.99)

    def thresholds(alarms: AlarmPolicy | None) -> list[float]:
        b = train_bundle(df, Task.ANOMALY_DETECTION, params, roles, alarms=alarms).bundle
        return [
            b.primary.threshold,
            b.fallback.threshold,
            b.metadata["baseline"]["threshold"],
            b.metadata["pca_baseline"]["threshold"],
        ]

    quantile = thresholds(None)
    budget = thresholds(AlarmPolicy(max_false_alarm_rate=0.01))
    assert all(b > q for b, q in zip(budget, quantile, strict=True)), (budget, quantile)
