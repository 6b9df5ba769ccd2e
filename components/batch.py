"""The KFP component of the batch-scoring pipeline: a thin shell over `batch_steps`.

Base image: Loopline's runtime image (`loopline/runtime`, docs/images.md), not the training
image: scoring loads bundles with numpy alone (format 2, `loopline.models.bundle`), so the run
needs no torch and starts from the smaller image. Bundles registered before format 2 need torch
to load; score those from the training image (recompile with `BASE_IMAGE` changed).

No `from __future__ import annotations` here: KFP reads the annotations as types.
"""

from kfp import dsl

from loopline import __version__

BASE_IMAGE = f"loopline/runtime:{__version__}"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def score_window(spec_json: str) -> str:
    """Score the run's window with its version, write and register the scores, record it."""
    import json

    from loopline.components import batch_steps

    return json.dumps(batch_steps.score_window(spec_json))
