"""How an anomaly Model's alarms are calibrated and counted: the false-alarm budget and the
k-of-n debouncing with hysteresis (`spec.alarms`, carried into every training run).

A budget replaces `training.thresholdQuantile`: the thresholds of the primary, the fallback
and both baselines are then set on held-out normal rows so that the false-alarm rate per row
stays within it (`loopline.models.calibration`), and the evaluation reports whether it did on
the newest rows. The debounce settings say what counts as one alarm event in the evaluation.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator
from pydantic.config import JsonDict

from loopline.types.common import Spec

MAX_WINDOW = 100
MAX_FALSE_ALARM_RATE = 0.5
K_MESSAGE = "alarms.k must not exceed alarms.n (k of the last n readings start an alarm)"
M_MESSAGE = (
    "alarms.m must not exceed alarms.k (an alarm ends when fewer than m of the last n "
    "readings are over the threshold; m above k would end it as it starts)"
)
DESCRIPTION = (
    "Anomaly detection: the false-alarm budget the thresholds are calibrated for, and the "
    "k-of-n debouncing alarm events are counted with (a classifier ignores it)."
)
ALARM_RULES: list[JsonDict] = [
    {
        "rule": "self.k <= self.n",
        "message": K_MESSAGE,
        "fieldPath": ".k",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.m <= self.k",
        "message": M_MESSAGE,
        "fieldPath": ".m",
        "reason": "FieldValueInvalid",
    },
]


class AlarmPolicy(Spec):
    """The false-alarm budget and what one alarm event is (`DESCRIPTION`)."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": list(ALARM_RULES)})

    max_false_alarm_rate: float | None = Field(
        default=None,
        alias="maxFalseAlarmRate",
        gt=0,
        le=MAX_FALSE_ALARM_RATE,
        description="Most normal rows (a fraction, e.g. 0.01) that may be over the threshold. "
        "Set: every threshold is calibrated on held-out normal rows to stay within it (with "
        "95 % confidence) instead of training.thresholdQuantile, and the evaluation reports "
        "whether the newest rows met it.",
    )
    k: int = Field(
        default=3,
        ge=1,
        le=MAX_WINDOW,
        description="An alarm event starts when k of an entity's last n readings are over the "
        "threshold.",
    )
    n: int = Field(default=5, ge=1, le=MAX_WINDOW, description="The debouncing window, readings.")
    m: int = Field(
        default=1,
        ge=1,
        le=MAX_WINDOW,
        description="An alarm event ends when fewer than m of the last n readings are over the "
        "threshold (hysteresis; at most k).",
    )

    @model_validator(mode="after")
    def _window_fits(self) -> AlarmPolicy:
        if self.k > self.n:
            raise ValueError(K_MESSAGE)
        if self.m > self.k:
            raise ValueError(M_MESSAGE)
        return self
