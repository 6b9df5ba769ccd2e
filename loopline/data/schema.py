"""The column contract of Loopline's data, and a declared schema for anyone's data.

The factory sensor columns are fixed names shared by the generator, the Feast repo, training,
serving and the drift monitor, so they live in one place. `DatasetSchema` describes a data set
(entity, timestamp, features with dtype and valid range, core subset, optional label); the
generator declares its output with it and bring-your-own data declares the user's file with it,
so the Feast repo and the quality gate treat both the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loopline.types.common import Task
from loopline.types.dataset import DatasetRoles, LabelKind

ENTITY = "machine_id"
TIMESTAMP = "event_timestamp"

CORE_SENSORS: tuple[str, ...] = (
    "spindle_vibration_rms",
    "spindle_current",
    "spindle_torque",
    "coolant_temperature",
)
OTHER_SENSORS: tuple[str, ...] = (
    "feed_rate",
    "spindle_speed",
    "axial_vibration",
    "acoustic_level",
    "motor_temperature",
    "coolant_flow",
    "chamber_pressure",
    "power_factor",
)
SENSORS: tuple[str, ...] = CORE_SENSORS + OTHER_SENSORS

FAULT_TYPE = "fault_type"
IS_FAULT = "is_fault"
NO_FAULT = "none"
FAULT_TYPES: tuple[str, ...] = (NO_FAULT, "bearing_wear", "tool_breakage", "coolant_loss")
LABELS: tuple[str, ...] = (FAULT_TYPE, IS_FAULT)

# Feast names: the feature repository, the pipelines and the serving path all refer to these.
FEAST_ENTITY = "machine"
RAW_VIEW = "sensor_readings"
ROLLING_VIEW = "sensor_rolling"
ALL_SENSORS_SERVICE = "all_sensors"
CORE_SENSORS_SERVICE = "core_sensors"

FeatureDType = Literal["float", "int"]
LabelDType = Literal["str", "int", "bool"]
FLAG_VALUES = frozenset({"0", "1", "true", "false"})


class SchemaError(ValueError):
    """A data set does not match its declared schema; the message names the column."""


def plain_errors(exc: ValidationError) -> str:
    """A validation error as one line per problem, `field: message`: what a user can act on,
    without pydantic's input dump and help links."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def _first_rows(mask: pd.Series, limit: int = 5) -> str:
    """Row numbers (counting data rows from 1) of the first `limit` true cells."""
    rows = [str(int(i) + 1) for i in np.flatnonzero(mask.to_numpy())[:limit]]
    return ", ".join(rows) + (", …" if int(mask.sum()) > limit else "")


class FeatureSpec(BaseModel):
    """One numeric feature column: its dtype and the range a valid reading lies in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dtype: FeatureDType = "float"
    min: float | None = Field(default=None, description="Smallest valid value (inclusive).")
    max: float | None = Field(default=None, description="Largest valid value (inclusive).")
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _range_ordered(self) -> FeatureSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"feature {self.name!r}: min {self.min} is greater than max {self.max}"
            )
        return self


class LabelSpec(BaseModel):
    """A label column and what it means: an anomaly flag (0/1 or boolean) or a class.

    `kind` is recorded at registration; a schema written before it existed gets it from the
    declared values ({0, 1} or booleans: a flag), else from the dtype (`bool` and `int`: a
    flag, `str`: a class).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    dtype: LabelDType = "str"
    kind: LabelKind = LabelKind.CLASS
    values: list[str] | None = Field(default=None, description="Allowed values, if known.")

    @model_validator(mode="before")
    @classmethod
    def _kind_from_values(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") is None:
            values = data.get("values")
            dtype = data.get("dtype", "str")
            flag = (
                {str(v).lower() for v in values} <= FLAG_VALUES
                if values
                else dtype in ("int", "bool")
            )
            data = {**data, "kind": LabelKind.ANOMALY_FLAG if flag else LabelKind.CLASS}
        return data


class DatasetSchema(BaseModel):
    """What a data set holds: who (entity), when (timestamp), what (features), and the label."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="sensors", pattern=r"^[a-z][a-z0-9_]*$")
    entity: str = Field(min_length=1)
    timestamp: str = Field(min_length=1)
    features: list[FeatureSpec] = Field(min_length=1)
    core: list[str] = Field(
        default_factory=list,
        description="Features the fallback model uses when the others are missing.",
    )
    labels: list[LabelSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names_consistent(self) -> DatasetSchema:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: duplicate names {dupes}")
        reserved = {self.entity, self.timestamp} | {label.name for label in self.labels}
        clash = sorted(reserved & set(names))
        if clash:
            raise ValueError(f"features: {clash} is also the entity, timestamp or a label")
        unknown = [c for c in self.core if c not in names]
        if unknown:
            raise ValueError(f"core: {unknown} are not among the features {names}")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def core_feature_names(self) -> list[str]:
        return list(self.core)

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    def label_for(self, task: Task) -> LabelSpec:
        """The label `task` trains on; `SchemaError` saying what to register when there is none.

        Anomaly detection needs an anomaly flag (0/1 or boolean), classification a class label.
        """
        kind = LabelKind.for_task(task)
        matching = [label for label in self.labels if label.kind == kind]
        if not matching:
            declared = [f"{label.name} ({label.kind})" for label in self.labels] or "none"
            raise SchemaError(
                f"{task} needs a label of kind {kind!s} and data set {self.name!r} declares "
                f"{declared}; register it with --label COLUMN --label-kind {kind!s}"
            )
        return matching[0]

    def roles(
        self,
        task: Task,
        *,
        features: list[str] | None = None,
        core_features: list[str] | None = None,
    ) -> DatasetRoles:
        """The column roles a model of `task` trains with (features default to the declared)."""
        label = self.label_for(task)
        return DatasetRoles(
            entity=self.entity,
            timestamp=self.timestamp,
            features=list(self.feature_names if features is None else features),
            core_features=list(self.core if core_features is None else core_features),
            label=label.name,
            label_kind=label.kind,
            classes=list(label.values or []) if label.kind == LabelKind.CLASS else [],
        )

    @property
    def columns(self) -> list[str]:
        return [self.entity, self.timestamp, *self.feature_names, *self.label_names]

    def feature(self, name: str) -> FeatureSpec:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def validate_frame(self, df: pd.DataFrame, *, check_duplicates: bool = True) -> None:
        """Raise `SchemaError` naming the first problem: missing column, dtype, timestamps, keys.

        This is the structural check run when data is registered; the quality gate scores the
        softer problems (nulls, out-of-range values, drift) instead of refusing the data.
        """
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise SchemaError(
                f"missing column(s) {missing}; the file has {list(df.columns)}. "
                "Rename them or declare the right names (--entity/--timestamp/--features/--label)."
            )
        if len(df) == 0:
            raise SchemaError("the data set has no rows")
        ent = df[self.entity]
        # Nulls first: a column with gaps reads as `object` or float, and its dtype is not
        # what is wrong with it.
        if ent.isna().any():
            raise SchemaError(
                f"entity column {self.entity!r} has {int(ent.isna().sum())} null value(s) in "
                f"{len(df)} rows (rows {_first_rows(ent.isna())}); every row needs an entity"
            )
        if not (
            pd.api.types.is_string_dtype(ent)
            or pd.api.types.is_integer_dtype(ent)
            or isinstance(ent.dtype, pd.CategoricalDtype)
        ):
            raise SchemaError(
                f"entity column {self.entity!r} has dtype {ent.dtype}; expected strings or integers"
            )
        ts = df[self.timestamp]
        if not pd.api.types.is_datetime64_any_dtype(ts):
            raise SchemaError(
                f"timestamp column {self.timestamp!r} has dtype {ts.dtype}, not timestamps; "
                "parse it first (e.g. ISO-8601 strings) or point --timestamp at a datetime column"
            )
        if ts.isna().all():
            raise SchemaError(f"timestamp column {self.timestamp!r} has no timestamps (all null)")
        if ts.isna().any():
            raise SchemaError(
                f"timestamp column {self.timestamp!r} has {int(ts.isna().sum())} nulls"
            )
        for spec in self.features:
            col = df[spec.name]
            ok = (
                pd.api.types.is_integer_dtype(col)
                if spec.dtype == "int"
                else pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
            )
            if not ok:
                raise SchemaError(
                    f"feature column {spec.name!r} has dtype {col.dtype}; expected {spec.dtype}"
                )
            # Gaps are the quality gate's business; a column with no reading at all, or with
            # infinities no model or statistic can use, is not data.
            values = col.to_numpy(dtype=np.float64, na_value=np.nan)
            infinite = np.isinf(values)
            if infinite.any():
                raise SchemaError(
                    f"feature column {spec.name!r} has {int(infinite.sum())} infinite value(s) "
                    f"(inf or -inf) in {len(df)} rows (rows {_first_rows(pd.Series(infinite))}); "
                    "replace them with readings or leave those cells empty"
                )
            if col.isna().all():
                raise SchemaError(
                    f"feature column {spec.name!r} has no values: all {len(df)} rows are empty; "
                    "fill it or leave it out of --features"
                )
        for label in self.labels:
            check_label(df[label.name], label)
        if check_duplicates:
            dup = df.duplicated([self.entity, self.timestamp])
            if dup.any():
                first = df.loc[dup, [self.entity, self.timestamp]].iloc[0]
                raise SchemaError(
                    f"{int(dup.sum())} duplicate ({self.entity}, {self.timestamp}) keys, e.g. "
                    f"({first[self.entity]}, {first[self.timestamp]}); each entity may have one "
                    "row per timestamp"
                )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: Path) -> Path:
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> DatasetSchema:
        try:
            return cls.model_validate(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema file {path} is not JSON: {exc}") from exc
        except ValidationError as exc:
            raise SchemaError(f"schema file {path}: {plain_errors(exc)}") from exc


def check_label(col: pd.Series, label: LabelSpec) -> None:
    """Refuse a label column whose values do not mean what its kind says (`SchemaError`)."""
    if label.dtype == "int" and not pd.api.types.is_integer_dtype(col):
        raise SchemaError(f"label column {label.name!r} has dtype {col.dtype}; expected int")
    values = col.dropna()
    if values.empty:
        raise SchemaError(
            f"label column {label.name!r} has no values: all {len(col)} rows are empty"
        )
    if label.kind == LabelKind.ANOMALY_FLAG:
        seen = {str(v).lower() for v in values.unique()}
        if pd.api.types.is_float_dtype(values):
            seen = {str(int(v)) if float(v).is_integer() else str(v) for v in values.unique()}
        other = sorted(seen - FLAG_VALUES)
        if other:
            raise SchemaError(
                f"label column {label.name!r} is an anomaly flag but holds {other[:5]}; a flag "
                "is 0/1 or true/false (declare --label-kind class for class labels)"
            )
    elif label.values is not None:
        unknown = sorted({str(v) for v in values.unique()} - set(label.values))
        if unknown:
            raise SchemaError(
                f"label column {label.name!r} has values {unknown[:5]} that are not among the "
                f"declared {label.values}"
            )


# Nominal operating point, spread of the per-machine offset, and valid range of each sensor.
# (name, unit, nominal, valid min, valid max, description)
_SENSOR_TABLE: tuple[tuple[str, str, float, float, float, str], ...] = (
    ("spindle_vibration_rms", "mm/s", 2.0, 0.0, 50.0, "RMS vibration at the spindle bearing"),
    ("spindle_current", "A", 12.0, 0.0, 80.0, "spindle motor current"),
    ("spindle_torque", "N*m", 25.0, 0.0, 200.0, "spindle torque"),
    ("coolant_temperature", "degC", 24.0, -10.0, 120.0, "coolant temperature at the outlet"),
    ("feed_rate", "mm/min", 300.0, 0.0, 2000.0, "feed rate of the drill"),
    ("spindle_speed", "rpm", 3000.0, 0.0, 20000.0, "spindle speed"),
    ("axial_vibration", "mm/s", 1.2, 0.0, 50.0, "axial vibration of the head"),
    ("acoustic_level", "dB", 78.0, 20.0, 140.0, "acoustic emission level"),
    ("motor_temperature", "degC", 45.0, -10.0, 150.0, "spindle motor winding temperature"),
    ("coolant_flow", "L/min", 20.0, 0.0, 100.0, "coolant flow rate"),
    ("chamber_pressure", "bar", 6.0, 0.0, 20.0, "coolant chamber pressure"),
    ("power_factor", "1", 0.85, 0.0, 1.0, "motor power factor"),
)
NOMINAL: dict[str, float] = {row[0]: row[2] for row in _SENSOR_TABLE}


def factory_schema() -> DatasetSchema:
    """The schema of the generator's factory sensor data (and of the default Feast repo)."""
    return DatasetSchema(
        name="sensors",
        entity=ENTITY,
        timestamp=TIMESTAMP,
        features=[
            FeatureSpec(name=n, dtype="float", min=lo, max=hi, unit=u, description=d)
            for n, u, _, lo, hi, d in _SENSOR_TABLE
        ],
        core=list(CORE_SENSORS),
        labels=[
            LabelSpec(name=FAULT_TYPE, dtype="str", kind=LabelKind.CLASS, values=list(FAULT_TYPES)),
            LabelSpec(name=IS_FAULT, dtype="int", kind=LabelKind.ANOMALY_FLAG, values=["0", "1"]),
        ],
    )
