"""The champion gate's rules, as a pure function of policy and metrics."""

from __future__ import annotations

import math

from loopline.tracking.gate import decide
from loopline.types.policy import ValidationPolicy


def test_first_model_is_promoted_when_it_meets_the_minimums() -> None:
    d = decide(ValidationPolicy(minimums={"roc_auc": 0.8}), {"f1": 0.7, "roc_auc": 0.9}, None)
    assert d.passed
    assert "no champion yet" in d.reason


def test_minimum_failure_names_metric_value_and_minimum() -> None:
    d = decide(ValidationPolicy(minimums={"roc_auc": 0.95}), {"f1": 0.7, "roc_auc": 0.9}, None)
    assert not d.passed
    assert d.failed_minimums == {"roc_auc": (0.9, 0.95)}
    assert "roc_auc 0.9000 < minimum 0.9500" in d.reason


def test_worse_challenger_is_rejected_with_both_numbers() -> None:
    policy = ValidationPolicy(metric="f1", champion_margin=0.01)
    d = decide(policy, {"f1": 0.80}, {"f1": 0.795}, champion_version="3")
    assert not d.passed
    assert d.champion_value == 0.795
    assert d.reason == ("f1 0.8000 < champion v3 0.7950 + margin 0.0100 on the same evaluation set")


def test_challenger_beating_champion_by_margin_is_promoted() -> None:
    policy = ValidationPolicy(metric="roc_auc", champion_margin=0.01)
    d = decide(policy, {"roc_auc": 0.95}, {"roc_auc": 0.93}, champion_version="1")
    assert d.passed
    assert d.margin == 0.01


def test_undefined_metric_is_rejected_not_promoted() -> None:
    d = decide(ValidationPolicy(metric="roc_auc"), {"roc_auc": math.nan, "f1": 0.0}, None)
    assert not d.passed
    assert "undefined" in d.reason


def test_unknown_minimum_names_the_reported_metrics() -> None:
    d = decide(ValidationPolicy(minimums={"auc": 0.5}), {"f1": 0.9}, None)
    assert not d.passed
    assert "['auc']" in d.reason
    assert "['f1']" in d.reason
