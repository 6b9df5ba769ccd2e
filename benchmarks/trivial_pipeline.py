"""The floor of a kfp.local run: six chained steps that do nothing, shaped like training's.

Each step takes the previous step's string and returns it, so the run measures only what
kfp.local itself costs per step (executor input, placeholders, a process or not, outputs).
"""

from kfp import dsl

STEPS = 6


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def nothing(value: str) -> str:
    return value


@dsl.pipeline(name="trivial")
def trivial_pipeline(value: str) -> str:
    task = nothing(value=value)
    task.set_caching_options(enable_caching=False)
    for _ in range(STEPS - 1):
        task = nothing(value=task.output)
        task.set_caching_options(enable_caching=False)
    return task.output
