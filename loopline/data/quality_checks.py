"""The Great Expectations side of the data quality gate: which expectations each dimension
runs, and running them fast (grouped by the columns they read, float64, BASIC results).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from loopline.data.quality_report import Dimension
from loopline.data.reference_stats import ReferenceStats, dtype_family
from loopline.data.schema import DatasetSchema
from loopline.types.policy import DataQualityThresholds

EXAMPLES = 5  # example values or rows kept per failed check

# dtype family -> the type names GE's ExpectColumnValuesToBeInTypeList accepts for it.
_FAMILY_TYPES: dict[str, list[str]] = {
    "float": ["float16", "float32", "float64"],
    "int": ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"],
    "bool": ["bool"],
    "datetime": ["DatetimeTZDtype", "datetime64[ns]", "datetime64[us]", "datetime64[ms]"],
    "string": ["object", "str", "StringDtype"],
}


def _context() -> Any:
    from loopline import quiet

    quiet.apply()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context


def expectations_for(
    frame: pd.DataFrame,
    schema: DatasetSchema,
    thresholds: DataQualityThresholds,
    reference: ReferenceStats | None,
    window_end: datetime,
) -> list[tuple[Dimension, Any]]:
    import great_expectations.expectations as gxe

    out: list[tuple[Dimension, Any]] = []
    present = set(frame.columns)
    for col in [schema.entity, schema.timestamp, *schema.feature_names]:
        if col in present:
            out.append(("completeness", gxe.ExpectColumnValuesToNotBeNull(column=col)))
    for f in schema.features:
        if f.name not in present:
            continue
        allowed = _FAMILY_TYPES["int"] + ([] if f.dtype == "int" else _FAMILY_TYPES["float"])
        out.append(
            ("validity", gxe.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=allowed))
        )
        if (f.min is not None or f.max is not None) and dtype_family(frame[f.name].dtype) in (
            "float",
            "int",
        ):
            out.append(
                (
                    "validity",
                    gxe.ExpectColumnValuesToBeBetween(
                        column=f.name, min_value=f.min, max_value=f.max
                    ),
                )
            )
    for label in schema.labels:
        if label.name in present and label.values:
            values: list[Any] = (
                [int(v) for v in label.values] if label.dtype == "int" else list(label.values)
            )
            out.append(
                ("validity", gxe.ExpectColumnValuesToBeInSet(column=label.name, value_set=values))
            )
    key = [schema.entity, schema.timestamp]
    if set(key) <= present:
        out.append(("uniqueness", gxe.ExpectCompoundColumnsToBeUnique(column_list=key)))
    expected_columns = dict(reference.columns) if reference else dict.fromkeys(schema.columns, "")
    out.append(
        (
            "consistency",
            gxe.ExpectTableColumnsToMatchSet(column_set=list(expected_columns), exact_match=True),
        )
    )
    if schema.timestamp in present:
        stale_after = window_end - timedelta(hours=thresholds.max_staleness_hours)
        out.append(
            (
                "timeliness",
                gxe.ExpectColumnMaxToBeBetween(
                    column=schema.timestamp,
                    min_value=pd.Timestamp(stale_after),
                    max_value=pd.Timestamp(window_end),
                ),
            )
        )
    return out


def validate(frame: pd.DataFrame, expectations: list[Any]) -> list[Any]:
    """Run the expectations, each on a batch of only the columns it reads; results in order.

    GE's pandas engine filters the whole batch frame for every column metric, so one batch of
    16 columns costs 16x the copying of 16 one-column batches: 15 s against 4 s on 1M rows.
    """
    import great_expectations as gx

    context = _context()
    batch_def = (
        context.data_sources.add_pandas("loopline")
        .add_dataframe_asset("training_set")
        .add_batch_definition_whole_dataframe("all")
    )
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, expectation in enumerate(expectations):
        kwargs = expectation.configuration.kwargs
        if "column" in kwargs:
            cols: tuple[str, ...] = (kwargs["column"],)
        elif "column_list" in kwargs:
            cols = tuple(kwargs["column_list"])
        else:
            cols = ()  # table-level: the column names are all it reads
        groups.setdefault(cols, []).append(i)
    results: list[Any] = [None] * len(expectations)
    for g, (cols, indices) in enumerate(groups.items()):
        part = frame.loc[:, list(cols)] if cols else frame.iloc[:0]
        batch = batch_def.get_batch(batch_parameters={"dataframe": part})
        suite = gx.ExpectationSuite(name=f"loopline_quality_gate_{g}")
        for i in indices:
            expectations[i].meta = {"loopline_index": i}  # GE returns results in its own order
            suite.add_expectation(expectations[i])
        validation = batch.validate(
            suite, result_format={"result_format": "BASIC", "partial_unexpected_count": EXAMPLES}
        )
        for result in validation.results:
            results[result.expectation_config.meta["loopline_index"]] = result
    return results
