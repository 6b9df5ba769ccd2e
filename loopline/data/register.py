"""Bring your own data: declare a schema for a user's file and turn it into a feature repository.

A user names the entity, timestamp and label columns (and optionally the features, the core
subset and what the label means); `declare_schema` fills in the rest from the file (numeric
columns become features) and
`register` validates the file against the schema, creates the Feast repository (feature view +
feature services), applies it and materializes the newest values. The user writes no Feast
code; a file that does not fit gets a `SchemaError` naming the column and the problem, and the
whole file is checked before anything is written, so a refused file leaves nothing behind.

Every task Loopline trains is supervised (anomaly detection calibrates on the rows the label
calls normal and is judged on the flagged ones), so a data set without a label is refused
here, at registration, and not minutes later when a run reaches training.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from loopline.data import features
from loopline.data.schema import (
    FLAG_VALUES,
    DatasetSchema,
    FeatureSpec,
    LabelSpec,
    SchemaError,
    plain_errors,
)
from loopline.types.dataset import LabelKind

_CSV = (".csv", ".txt")


def read_data(source: Path) -> pd.DataFrame:
    """The user's file as a frame; an empty file is refused here, before any column is
    inferred from it (a header-only CSV has no dtypes to infer from)."""
    kind = "CSV" if Path(source).suffix.lower() in _CSV else "file"
    try:
        frame = features.read_source(Path(source))
    except pd.errors.EmptyDataError:
        raise SchemaError(f"the {kind} is empty: no header and no rows") from None
    if len(frame) == 0:
        raise SchemaError(
            f"the {kind} has no rows (only the columns {list(frame.columns)}); register a file "
            "with data in it"
        )
    return frame


def parse_timestamps(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """`frame` with `column` as UTC timestamps; a text value that is not one is named with
    its row, so the user can find it."""
    if column in frame.columns and (
        pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(frame[column])
    ):
        col = frame[column]
        parsed = pd.to_datetime(col, utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna() & col.notna()
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise SchemaError(
                f"timestamp column {column!r} does not hold timestamps: row {row + 1} has "
                f"{col.iloc[row]!r} ({int(bad.sum())} such value(s) in {len(frame)} rows); use "
                "ISO-8601 times such as 2026-03-01T00:00:00Z"
            )
    return features.normalise_timestamps(frame, column)


def declare_schema(
    frame: pd.DataFrame,
    *,
    entity: str,
    timestamp: str,
    label: str | None,
    label_kind: LabelKind | None = None,
    feature_names: Sequence[str] | None = None,
    core: Sequence[str] | None = None,
    name: str = "sensors",
) -> DatasetSchema:
    """A schema for `frame`: declared columns as given, undeclared features inferred.

    Without `feature_names`, every numeric column other than the entity, timestamp and label is
    a feature. A declared feature that is not numeric is an error (wrong dtype), not skipped.
    """
    if not label:
        raise SchemaError(
            "no label column: pass --label COLUMN (an anomaly flag, 0/1 or true/false, for "
            "anomaly detection; a class column for classification); without it the label "
            f"would be taken for a feature. The columns are {list(frame.columns)}"
        )
    for role, col in (("entity", entity), ("timestamp", timestamp), ("label", label)):
        if col not in frame.columns:
            raise SchemaError(
                f"{role} column {col!r} (--{role}) is not in the file; its columns are "
                f"{list(frame.columns)}"
            )
    reserved = {entity, timestamp, label}
    if feature_names is None:
        names = [
            str(c)
            for c in frame.columns
            if c not in reserved
            and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
        if not names:
            raise SchemaError(
                f"no numeric feature columns besides {sorted(reserved)}; declare them with "
                "--features"
            )
    else:
        names = list(feature_names)
    unknown = [c for c in core or [] if c not in names]
    if unknown:
        raise SchemaError(
            f"core sensor(s) {unknown} are not among the features; the valid ones are {names} "
            "(--core takes a subset of --features)"
        )
    specs = []
    for n in names:
        dtype = "int" if n in frame.columns and pd.api.types.is_integer_dtype(frame[n]) else "float"
        specs.append(FeatureSpec(name=n, dtype=dtype))
    labels = [_label_spec(frame[label], label, label_kind)]
    try:
        return DatasetSchema(
            name=name,
            entity=entity,
            timestamp=timestamp,
            features=specs,
            core=list(core or []),
            labels=labels,
        )
    except ValidationError as exc:
        raise SchemaError(plain_errors(exc)) from exc


def _label_spec(col: pd.Series, name: str, kind: LabelKind | None) -> LabelSpec:
    """The label's dtype and meaning: a column holding only 0/1 or booleans is an anomaly flag
    unless `kind` says it is a class; any other column is a class label."""
    values = col.dropna()
    dtype = (
        "bool"
        if pd.api.types.is_bool_dtype(col)
        else "int"
        if pd.api.types.is_integer_dtype(col)
        else "str"
    )
    as_text = {str(v).lower() for v in values.unique()}
    if pd.api.types.is_float_dtype(values):
        as_text = {str(int(v)) if float(v).is_integer() else str(v) for v in values.unique()}
    if kind is None:
        kind = LabelKind.ANOMALY_FLAG if as_text and as_text <= FLAG_VALUES else LabelKind.CLASS
    classes = sorted({str(v) for v in values.unique()}) if kind == LabelKind.CLASS else None
    return LabelSpec(name=name, dtype=dtype, kind=kind, values=classes)


@dataclass(frozen=True)
class Registered:
    """What `register` made: the repository, its spec and a summary line."""

    repo_dir: Path
    spec: features.RepoSpec
    rows: int
    summary: str


def register(
    source: Path,
    repo_dir: Path,
    schema: DatasetSchema,
    *,
    materialize: bool = True,
    rolling: bool = True,
) -> Registered:
    """Validate `source` against `schema`, create + apply the repository, materialize it.

    The file is checked in full first; if creating, applying or materializing fails after
    that, what this call added to `repo_dir` is removed (and `repo_dir` itself if it made it).
    """
    if not schema.labels:
        raise SchemaError(
            f"the schema of {schema.name!r} declares no label; declare one (--label COLUMN, or "
            "`labels` in the schema file): every task trains on a label"
        )
    frame = parse_timestamps(read_data(source), schema.timestamp)
    schema.validate_frame(frame)
    repo_dir = Path(repo_dir)
    existed = repo_dir.exists()
    before = set(repo_dir.iterdir()) if existed and repo_dir.is_dir() else set()
    try:
        spec = features.create_repo(repo_dir, frame, schema, rolling=rolling)
        store = features.apply(repo_dir)
        if materialize:
            features.materialize(repo_dir, store=store)
    except BaseException:
        _remove_added(repo_dir, existed, before)
        raise
    summary = (
        f"registered {len(frame)} rows of {source} in {repo_dir}: entity {spec.entity_name} "
        f"({schema.entity}), feature view {spec.raw_view} ({len(schema.features)} features), "
        f"services {', '.join(spec.services)}; label "
        + ", ".join(f"{label.name} ({label.kind})" for label in schema.labels)
        + ("; online store filled" if materialize else "")
    )
    return Registered(repo_dir=Path(repo_dir), spec=spec, rows=len(frame), summary=summary)


def _remove_added(repo_dir: Path, existed: bool, before: set[Path]) -> None:
    if not existed:
        shutil.rmtree(repo_dir, ignore_errors=True)
        return
    for entry in set(repo_dir.iterdir()) - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
