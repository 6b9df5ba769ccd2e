"""The batch-scoring pipeline: one step that scores a window with a registered version.

Like the training pipeline it takes one parameter, the run spec as JSON
(`loopline.types.batch.BatchRunSpec`), so the operator's schedule, `loopline score --submit`,
the local runner and a KFP run all pass the same thing. The scoring itself is
`loopline.batch.job.run_batch`, the code `loopline score` runs in-process.
"""

from kfp import dsl

from loopline.components.batch import score_window
from loopline.types.batch import BATCH_PIPELINE

PIPELINE_NAME = "loopline-batch-scoring"


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Loopline: score a window of the offline store with a registered version.",
)
def batch_scoring_pipeline(spec_json: str) -> str:
    task = score_window(spec_json=spec_json)
    # A window scored again is a new run with new output (scored_at), never a cached one.
    task.set_caching_options(enable_caching=False)
    return task.output


BATCH_PIPELINES = {BATCH_PIPELINE: batch_scoring_pipeline}


def all_pipelines() -> dict[str, object]:
    """Every pipeline a runner or the compiler knows, by the name a run spec gives."""
    from loopline.pipelines.training import PIPELINES

    return {**PIPELINES, **BATCH_PIPELINES}
