"""How an anomaly Model's alarms are calibrated and counted: the false-alarm budget and the
k-of-n debouncing with hysteresis (`spec.alarms`, carried into every training run).

A budget replaces `training.thresholdQuantile`: the thresholds of the primary, the fallback
and both baselines are then set on held-out normal rows so that the false-alarm rate per row
stays within it (`loopline.models.calibration`), and the evaluation reports whether it did on
the newest rows. The debounce settings say what counts as one alarm event in the evaluation.
`baselineReadings` judges each score against its entity's recent level instead of a fixed
threshold alone (`loopline.models.score_baseline`).
"""

from __future__ import annotations

from pydantic import (
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic.config import JsonDict

from loopline.types.common import Spec

MAX_WINDOW = 100
MAX_FALSE_ALARM_RATE = 0.5
MAX_BASELINE_READINGS = 1_000_000
RAISE_MESSAGE = (
    "alarms.raiseAt must not exceed alarms.window (an alarm starts when raiseAt of the last "
    "window readings are over the threshold)"
)
CLEAR_MESSAGE = (
    "alarms.clearBelow must not exceed alarms.raiseAt (an alarm ends when fewer than "
    "clearBelow of the last window readings are over the threshold; above raiseAt it would "
    "end as it starts)"
)
DESCRIPTION = (
    "Anomaly detection: the false-alarm budget the thresholds are calibrated for, and the "
    "k-of-n debouncing alarm events are counted with (a classifier ignores it)."
)
ALARM_RULES: list[JsonDict] = [
    {
        "rule": "self.raiseAt <= self.window",
        "message": RAISE_MESSAGE,
        "fieldPath": ".raiseAt",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.clearBelow <= self.raiseAt",
        "message": CLEAR_MESSAGE,
        "fieldPath": ".clearBelow",
        "reason": "FieldValueInvalid",
    },
]


class AlarmPolicy(Spec):
    """The false-alarm budget and what one alarm event is (`DESCRIPTION`).

    In the k-of-n terms of `loopline.models.alarms`: k = `raiseAt`, n = `window`,
    m = `clearBelow`. Not the letters themselves: YAML 1.1, which kubectl reads manifests
    with, takes a bare `n` for false, so `n: 5` would arrive as `false: 5`.

    The defaults, 5 of 8 ending below 1, are the quality bench's choice on the generated
    plant (docs/training.md): 3 of 5 let a short sensor spike or a noisy stretch through as an
    event three times a machine-day; 5 of 8 keeps that under one at a median delay of four
    readings, the earliest 5 of 8 allows, and a fault shorter than five readings is not an
    alarm event.
    """

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
    window: int = Field(
        default=8,
        ge=1,
        le=MAX_WINDOW,
        description="The debouncing window: an entity's last this many readings (n).",
    )
    raise_at: int = Field(
        default=5,
        alias="raiseAt",
        ge=1,
        le=MAX_WINDOW,
        description="An alarm event starts when at least this many of the window's readings "
        "are over the threshold (k; at most window).",
    )
    clear_below: int = Field(
        default=1,
        alias="clearBelow",
        ge=1,
        le=MAX_WINDOW,
        description="An alarm event ends when fewer than this many of the window's readings "
        "are over the threshold (m, hysteresis; at most raiseAt).",
    )

    baseline_readings: int | None = Field(
        default=None,
        alias="baselineReadings",
        ge=2,
        le=MAX_BASELINE_READINGS,
        description="Judge each reading against its own entity's recent level: its score "
        "(in units of the threshold) divided by the median of the entity's previous this "
        "many scores must be over a relative threshold calibrated on the newest held-out "
        "normal readings of each entity. For slow drift such as wear; at least twice the "
        "longest fault, in readings. Unset: the plain threshold.",
    )

    @model_validator(mode="after")
    def _window_fits(self) -> AlarmPolicy:
        if self.raise_at > self.window:
            raise ValueError(RAISE_MESSAGE)
        if self.clear_below > self.raise_at:
            raise ValueError(CLEAR_MESSAGE)
        return self

    @model_serializer(mode="wrap")
    def _without_unset_baseline(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, object]:
        """Leave an unset baseline out: a Model's alarms then dump (and hash into its
        training input) exactly as before the field existed, so setting nothing starts no
        run."""
        doc: dict[str, object] = handler(self)
        if self.baseline_readings is None:
            doc.pop("baselineReadings", None)
            doc.pop("baseline_readings", None)
        return doc

    @property
    def k(self) -> int:
        return self.raise_at

    @property
    def n(self) -> int:
        return self.window

    @property
    def m(self) -> int:
        return self.clear_below
