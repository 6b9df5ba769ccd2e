"""Which rows of a training window train the model and which ones judge it.

The evaluation set is the newest part of the window, so a model is judged on a period it has
not seen. Taking the newest fraction of the whole window is not enough: classes come in
episodes (a machine runs one activity for hours, a fault lasts a day), and the newest fifth
can hold only some of them, so the gate would judge a classifier on half its classes, or an
anomaly detector on no anomalies at all. So the split is per label value: the newest
`eval_fraction` of each value's rows (by timestamp) is evaluated, the older rows train. Each
class is judged on its own freshest rows; a class with a single row can only train, and
`uncovered_classes` then names it so the gate refuses to decide (see `check_covers`).

Rows without a label value are neither trained nor evaluated on.
"""

from __future__ import annotations

import math

import pandas as pd

from loopline.types.dataset import DatasetRoles


class EvaluationSetError(ValueError):
    """The evaluation set cannot judge the model; the message names what it lacks."""


def label_values(labels: pd.Series) -> pd.Series:
    """Label values as text, so 1, 1.0 and True count as the same class."""

    def text(v: object) -> str:
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return labels.map(text)


def normal_rows(df: pd.DataFrame, roles: DatasetRoles) -> pd.Series:
    """True where the anomaly flag says normal (0 or false); unlabelled rows are not normal."""
    return label_values(df[roles.label].dropna()).eq("0").reindex(df.index, fill_value=False)


def split_per_label(
    df: pd.DataFrame, roles: DatasetRoles, eval_fraction: float = 0.2
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, evaluation): per label value, its newest `eval_fraction` of rows evaluates.

    A value with n >= 2 rows puts ceil(n * eval_fraction) of them (at most n - 1) into the
    evaluation set, so every value with two rows or more is in both sets. Both frames are in
    time order.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    for role, col in (("timestamp", roles.timestamp), ("label", roles.label)):
        if col not in df.columns:
            raise EvaluationSetError(
                f"{role} column {col!r} is missing; cannot split for evaluation "
                f"(columns: {list(df.columns)})"
            )
    labelled = df[df[roles.label].notna()]
    ordered = labelled.sort_values(roles.timestamp, kind="stable").reset_index(drop=True)
    values = label_values(ordered[roles.label])
    reverse = values.iloc[::-1]
    newest_rank = reverse.groupby(reverse, sort=False).cumcount().sort_index()
    counts = values.map(values.value_counts())
    n_eval = counts.map(lambda n: 0 if n < 2 else min(n - 1, math.ceil(n * eval_fraction)))
    to_eval = newest_rank < n_eval
    return ordered[~to_eval].reset_index(drop=True), ordered[to_eval].reset_index(drop=True)


def uncovered_classes(window: pd.DataFrame, evaluation: pd.DataFrame, label: str) -> list[str]:
    """Label values the window has and the evaluation set lacks, sorted."""
    have = set(label_values(window[label].dropna()))
    judged = set(label_values(evaluation[label].dropna())) if label in evaluation else set()
    return sorted(have - judged)


def check_covers(window: pd.DataFrame, evaluation: pd.DataFrame, roles: DatasetRoles) -> None:
    """Refuse (EvaluationSetError) an evaluation set that lacks a class of the window.

    A gate that judged on such a set would compare models on some of their classes and call
    it the whole; no decision is better than that one.
    """
    missing = uncovered_classes(window, evaluation, roles.label)
    if missing:
        counts = label_values(window[roles.label].dropna()).value_counts()
        detail = ", ".join(f"{m!r} ({int(counts[m])} row(s))" for m in missing)
        raise EvaluationSetError(
            f"the evaluation set lacks label value(s) {detail} of {roles.label!r} that the "
            f"training window has; the gate does not decide on it. Widen the window (or the "
            f"data) so that every class has at least two rows"
        )
