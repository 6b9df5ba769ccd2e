"""A samples body parsed into arrays says what the `SampleBatch` model says, and refuses what it
refuses with the model's own error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from loopline.monitoring.intake import SampleRows, parse_samples
from loopline.samples import SampleBatch
from loopline.serving.sampling import PendingSample, to_sample_batch

NAMES = ["a", "b", "c"]


def sampler_body(n: int = 40, seed: int = 0) -> bytes:
    """What the lean server's sampler POSTs, built by its own code."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(NAMES)))
    x[rng.random(x.shape) < 0.2] = np.nan
    item = PendingSample(
        model_version="4",
        x=x,
        machine_ids=[f"m{i % 3}" for i in range(n)],
        scores=rng.random(n),
        decisions=rng.random(n) < 0.3,
        fallback=np.zeros(n, dtype=bool),
    )
    return to_sample_batch("drill", NAMES, item).model_dump_json(by_alias=True).encode()


def via_model(body: bytes) -> SampleRows:
    return SampleRows.from_batch(SampleBatch.model_validate_json(body))


def assert_same(got: SampleRows, want: SampleRows) -> None:
    assert (got.model, got.model_version, got.feature_names) == (
        want.model,
        want.model_version,
        want.feature_names,
    )
    np.testing.assert_array_equal(got.values, want.values)  # NaN where None, equal elsewhere
    assert got.machine_ids == want.machine_ids
    assert (got.decisions is None) == (want.decisions is None)
    if got.decisions is not None and want.decisions is not None:
        np.testing.assert_array_equal(got.decisions, want.decisions)


@pytest.mark.parametrize("n", [0, 1, 40])
def test_sampler_payload_parses_like_the_batch_model(n: int) -> None:
    body = sampler_body(n)
    got = parse_samples(body)
    assert got.values.shape == (n, 3)
    assert got.values.dtype == np.float64
    assert_same(got, via_model(body))


def test_field_names_ints_bools_and_nan_literals_as_the_model_takes_them() -> None:
    doc = {"model": "m", "model_version": "1", "feature_names": ["a", "b"], "rows": [[1, True]]}
    assert_same(parse_samples(json.dumps(doc).encode()), via_model(json.dumps(doc).encode()))
    # Python's json writes NaN literals; orjson refuses them, the batch model takes them.
    doc["rows"] = [[float("nan"), 2.5]]
    body = json.dumps(doc).encode()
    got = parse_samples(body)
    assert np.isnan(got.values[0, 0])
    assert got.values[0, 1] == 2.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": [[1.0, 2.0]]}, "rows[0] has 2 values, featureNames has 3"),
        ({"rows": [[1.0, 2.0, [3.0]]]}, "rows.0.2"),
        ({"rows": [[1.0, 2.0, "x"]]}, "rows.0.2"),
        ({"machineIds": ["m0"]}, "machine_ids has 1 entries for 40 rows"),
        ({"decisions": [True] * 41}, "decisions has 41 entries for 40 rows"),
        ({"featureNames": []}, "featureNames"),
        ({"extra": 1}, "extra"),
        ({"model": None}, "model"),
    ],
)
def test_invalid_bodies_get_the_batch_models_error(change: dict[str, object], message: str) -> None:
    doc = json.loads(sampler_body())
    doc.update(change)
    body = json.dumps(doc).encode()
    with pytest.raises(ValidationError) as got:
        parse_samples(body)
    with pytest.raises(ValidationError) as want:
        SampleBatch.model_validate_json(body)
    # (the context holds the raised exception objects, equal only to themselves)
    assert got.value.errors(include_context=False) == want.value.errors(include_context=False)
    assert message in str(got.value)


def test_malformed_json_is_the_models_json_error() -> None:
    with pytest.raises(ValidationError, match=r"json_invalid|Invalid JSON"):
        parse_samples(b'{"model": "m", "rows": [[1.0,')
