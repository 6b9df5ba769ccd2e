"""KFP v2 components of the training pipeline: thin shells over `loopline.components.steps`.

Base image: every component runs in `BASE_IMAGE`, Loopline's training image
(`loopline/training`, docs/images.md: the locked dependencies plus torch), tagged with the
package version, which `loopline images push` pushes besides the content tag. A KFP cluster
must resolve that name (its registry mirror configuration), or the package is recompiled
with a full reference.
`install_kfp_package=False` because that image already has the KFP SDK, so a component
starts without reaching a package index: clusters on a factory floor often cannot.

Each body imports inside itself because KFP ships only the function's source to the pod, and
this module has no `from __future__ import annotations`: KFP reads the annotations as types.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from loopline import __version__

BASE_IMAGE = f"loopline/training:{__version__}"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def load_features(spec_json: str, features: Output[Dataset]) -> str:
    """Point-in-time training set of the run's window from Feast; opens the MLflow run."""
    import json

    from loopline.components import steps

    meta = steps.load_features(spec_json, features.path)
    features.metadata.update(
        {k: meta[k] for k in ("rows", "data_hash", "window_start", "window_end")}
    )
    return json.dumps(meta)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def validate_data(
    spec_json: str, features: Input[Dataset], quality_report: Output[Markdown]
) -> str:
    """The data quality gate; fails the run before training with the gate's summary."""
    import json

    from loopline.components import steps

    return json.dumps(steps.validate_data(spec_json, features.path, quality_report.path))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def train_model(spec_json: str, features: Input[Dataset], model: Output[Model]) -> str:
    """Primary, core-sensor fallback and statistical baseline, saved as one bundle."""
    import json

    from loopline.components import model_steps

    out = model_steps.train_model(spec_json, features.path, model.path)
    model.metadata.update({"framework": "torch", "format": "loopline-bundle"})
    return json.dumps(out["metrics"])


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def evaluate_model(
    spec_json: str,
    features: Input[Dataset],
    model: Input[Model],
    evaluation_report: Output[Markdown],
) -> str:
    """Metrics of the new model on the newest part of the window."""
    from loopline.components import model_steps

    return model_steps.evaluate_model(spec_json, features.path, model.path, evaluation_report.path)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compare_with_champion(
    spec_json: str,
    features: Input[Dataset],
    evaluation: str,
    comparison_report: Output[Markdown],
) -> str:
    """The current champion scored on the same evaluation rows."""
    from loopline.components import model_steps

    return model_steps.compare_with_champion(
        spec_json, features.path, evaluation, comparison_report.path
    )


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def register_model(
    spec_json: str,
    features: Input[Dataset],
    model: Input[Model],
    evaluation: str,
    comparison: str,
) -> str:
    """Register the challenger and apply the champion gate; returns the outcome as JSON."""
    from loopline.components import model_steps

    return model_steps.register_model(spec_json, features.path, model.path, evaluation, comparison)
