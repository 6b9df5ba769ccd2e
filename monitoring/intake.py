"""A `POST /v1/samples` body, parsed straight into a float matrix.

The body is a `loopline.samples.SampleBatch` (a model server's sampler sends one per sampled
request). Validating it as that model turns every value of `rows` into a Python float inside a
list of lists, which the monitor then turns into a numpy array value by value: for 250 rows of
16 features that was most of what a request cost. Here orjson parses the body, numpy converts
`rows` in one call (`None` becomes NaN), and pydantic validates everything else with the batch's
own field definitions. Whatever this path does not take as-is (malformed JSON, NaN literals,
ragged or nested rows, lengths that disagree) is validated as a `SampleBatch` after all, so a bad
body gets exactly the batch model's error and a valid one is never refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pydantic import BaseModel, create_model

from loopline.samples import SampleBatch

_PER_ROW = ("machine_ids", "scores", "decisions", "fallback")

# SampleBatch without its rows: the same fields, aliases, defaults and extra="forbid".
_Header: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "SampleBatchHeader",
    __config__=SampleBatch.model_config,
    **{
        name: (field.annotation, field)
        for name, field in SampleBatch.model_fields.items()
        if name != "rows"
    },
)


@dataclass(frozen=True)
class SampleRows:
    """One batch of sampled rows: values float64 [rows, features], NaN where missing."""

    model: str
    model_version: str
    feature_names: list[str]
    values: np.ndarray
    machine_ids: list[str] | None = None
    decisions: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def from_batch(cls, batch: SampleBatch) -> SampleRows:
        width = len(batch.feature_names)
        values = np.array(batch.rows, dtype=np.float64).reshape(len(batch.rows), width)
        return cls(
            model=batch.model,
            model_version=batch.model_version,
            feature_names=list(batch.feature_names),
            values=values,
            machine_ids=batch.machine_ids,
            decisions=None if batch.decisions is None else np.array(batch.decisions, dtype=bool),
        )


def parse_samples(body: bytes) -> SampleRows:
    """The rows of a JSON `SampleBatch`; raises its `pydantic.ValidationError` when invalid."""
    fast = _parse_fast(body)
    if fast is not None:
        return fast
    return SampleRows.from_batch(SampleBatch.model_validate_json(body))


def _parse_fast(body: bytes) -> SampleRows | None:
    """The rows, or None when the batch model must decide (an error or an unusual body)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        return None
    rows: list[Any] = doc.pop("rows")
    try:
        values = np.array(rows, dtype=np.float64)
        header: Any = _Header.model_validate(doc)
    except (ValueError, TypeError, OverflowError):  # pydantic's ValidationError is a ValueError
        return None
    width, n = len(header.feature_names), len(rows)
    if n == 0:
        values = values.reshape(0, width)
    if values.ndim != 2 or values.shape != (n, width):
        return None
    if any(
        getattr(header, name) is not None and len(getattr(header, name)) != n for name in _PER_ROW
    ):
        return None
    return SampleRows(
        model=header.model,
        model_version=header.model_version,
        feature_names=list(header.feature_names),
        values=values,
        machine_ids=header.machine_ids,
        decisions=None if header.decisions is None else np.array(header.decisions, dtype=bool),
    )
