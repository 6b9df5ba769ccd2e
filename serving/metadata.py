"""The model's inputs as `GET /v2/models/{name}` and `ModelMetadata` describe them.

A generic V2 client (tritonclient, perf_analyzer) sends one tensor per listed input, shaped
and typed as listed. So the metadata lists one layout only, the per-feature inputs, whose
names are the data set's columns, then the entity; the alternative `features` matrix is
described in the model's parameters (docs/serving.md, "Request layouts", says why).
"""

from __future__ import annotations

import json

from mlserver.types import MetadataTensor, Parameters

from loopline.serving.payload import FEATURES_INPUT, FeatureLayout


def metadata_inputs(layout: FeatureLayout, *, fallback: bool = True) -> list[MetadataTensor]:
    """One FP32 [-1] input per feature, then the entity, each with parameters a client can
    act on: `optional` says it may leave the input out (the entity always, a non-core sensor
    when the fallback model answers for its rows)."""
    core = set(layout.core_names)
    tensors = [
        MetadataTensor(
            name=name,
            datatype="FP32",
            shape=[-1],
            parameters=Parameters(
                role="feature", core=name in core, optional=fallback and name not in core
            ),
        )
        for name in layout.feature_names
    ]
    tensors.append(
        MetadataTensor(
            name=layout.entity,
            datatype="BYTES",
            shape=[-1],
            parameters=Parameters(role="entity", optional=True),
        )
    )
    return tensors


def metadata_parameters(layout: FeatureLayout) -> dict[str, str]:
    """The model parameters describing what the listed inputs do not: the alternative
    `features` input (a V2 parameter is a scalar, so a JSON document in a string)."""
    alternative = {
        "name": FEATURES_INPUT,
        "datatype": "FP32",
        "shape": [-1, layout.width],
        "columns": list(layout.feature_names),
        "replaces": "the per-feature inputs (send one layout or the other, not both)",
    }
    return {
        "input_layout": "per-feature",
        "entity": layout.entity,
        "alternative_inputs": json.dumps([alternative]),
    }
