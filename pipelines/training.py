"""The training pipeline: features -> quality gate -> train -> evaluate -> champion -> register.

One parameter, the run spec as JSON (`loopline.types.runs.TrainingRunSpec`), so the operator,
the local runner and a KFP run on a cluster all pass exactly the same thing and the compiled
package never changes with the spec's fields.
"""

from kfp import dsl

from loopline.components.training import (
    compare_with_champion,
    evaluate_model,
    load_features,
    register_model,
    train_model,
    validate_data,
)

PIPELINE_NAME = "loopline-training"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Loopline: train, evaluate and gate a model on point-in-time Feast features.",
)
def training_pipeline(spec_json: str) -> str:
    features = load_features(spec_json=spec_json)
    quality = validate_data(spec_json=spec_json, features=features.outputs["features"])
    train = train_model(spec_json=spec_json, features=features.outputs["features"])
    train.after(quality)
    evaluation = evaluate_model(
        spec_json=spec_json,
        features=features.outputs["features"],
        model=train.outputs["model"],
    )
    comparison = compare_with_champion(
        spec_json=spec_json,
        features=features.outputs["features"],
        evaluation=evaluation.outputs["Output"],
    )
    registered = register_model(
        spec_json=spec_json,
        features=features.outputs["features"],
        model=train.outputs["model"],
        evaluation=evaluation.outputs["Output"],
        comparison=comparison.outputs["Output"],
    )
    for task in (features, quality, train, evaluation, comparison, registered):
        # Every run is a new decision on new data: never reuse a cached step's outputs.
        task.set_caching_options(enable_caching=False)
    return registered.outputs["Output"]


PIPELINES = {"training": training_pipeline}
