"""metav1.Condition bookkeeping: transition times change only when the status does."""

from __future__ import annotations

from datetime import datetime

from loopline.types.status import Condition, ConditionStatus


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set; `lastTransitionTime` moves only when the
    condition's status flips, as Kubernetes conventions ask."""
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    old = next((c for c in conditions if c.type == type_), None)
    changed_at = old.last_transition_time if old is not None and old.status == status else now
    new = Condition(
        type=type_,
        status=status,
        observed_generation=generation,
        reason=reason,
        message=message[:32768],
        last_transition_time=changed_at,
    )
    if old == new:
        return list(conditions)
    return [new if c.type == type_ else c for c in conditions] if old else [*conditions, new]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == ConditionStatus.TRUE
