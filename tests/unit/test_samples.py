from __future__ import annotations

import pytest
from pydantic import ValidationError

from loopline.samples import SampleBatch


def test_round_trip_uses_camel_case_on_the_wire() -> None:
    batch = SampleBatch(
        model="drill-ae",
        modelVersion="3",
        featureNames=["a", "b"],
        rows=[[1.0, None], [2.0, 3.0]],
        scores=[0.1, 0.2],
    )
    wire = batch.model_dump(mode="json", by_alias=True)
    assert wire["modelVersion"] == "3"
    assert SampleBatch.model_validate(wire) == batch


def test_ragged_rows_name_the_row() -> None:
    with pytest.raises(ValidationError, match=r"rows\[1\] has 1 values"):
        SampleBatch(model="m", modelVersion="1", featureNames=["a", "b"], rows=[[1, 2], [1]])


def test_per_row_fields_must_match_row_count() -> None:
    with pytest.raises(ValidationError, match="scores has 1 entries for 2 rows"):
        SampleBatch(model="m", modelVersion="1", featureNames=["a"], rows=[[1], [2]], scores=[0.5])
