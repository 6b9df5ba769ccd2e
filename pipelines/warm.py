"""Warm steps: kfp.local runs each lightweight component in the runner's own interpreter.

Why: `kfp.local.SubprocessRunner` starts every task as `sh -> python -m kfp.dsl.executor_main`,
so each of the pipeline's steps pays a fresh interpreter, the imports of pandas, MLflow,
Feast, great_expectations and torch, and MLflow's store set-up again; on a loaded 2-core
machine that was most of a local run's wall time (docs/profiles/pipeline.md). Here the same
executor (`kfp.dsl.executor.Executor`) runs the same component source with the same
executor input in this process, so imports and stores are paid once per run.

What stays kfp's: the compiled IR, the DAG walk, the executor input (artifact URIs, output
file), the placeholders and the reading of outputs after a task; only where a task's body
runs changes. A command that is not the plain executor call (e.g. one that pip-installs
first) still runs as kfp's subprocess. The command's `_KFP_RUNTIME=true` only narrows what
`kfp.dsl` exports when it is first imported; here it is imported already, in full.

Steps share the process, so a step that corrupts process state (a native crash) takes the
run down with it; the local backend then reports the worker's exit. `subprocess_steps()`
keeps kfp's own behaviour, one process per step.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kfp.local import status, subprocess_task_handler

log = logging.getLogger(__name__)

EXECUTOR_MODULE = "kfp.dsl.executor_main"
_MODULE_NAME = "ephemeral_component"
# One in-process task at a time: the executor sets module globals (the task root) per task.
_TASK_LOCK = threading.Lock()
# kfp.local swaps `print` for an indenting one while a task runs; a step gets the real one, as
# in its own process (numba, for one, checks that `print` is the builtin at import).
_PRINT = builtins.print


@dataclass(frozen=True)
class ExecutorCall:
    """A lightweight component's task as kfp.local would start it: its source and arguments."""

    source: str
    function: str
    executor_input: str
    env: dict[str, str]


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg == name:
            return args[i + 1]
    return None


def executor_call(full_command: list[str], env: dict[str, str]) -> ExecutorCall | None:
    """The call inside kfp's `sh -ec <script> <source> <args>` command, or None if the script
    does anything besides writing the source and running the executor (a pip install)."""
    if len(full_command) < 4 or full_command[:2] != ["sh", "-ec"]:
        return None
    script = full_command[2]
    lines = [line.strip() for line in script.splitlines() if line.strip()]
    plain = (
        len(lines) == 3
        and lines[0] == "program_path=$(mktemp -d)"
        and lines[1] == 'printf "%s" "$0" > "$program_path/ephemeral_component.py"'
        and EXECUTOR_MODULE in lines[2]
        and '"$@"' in lines[2]
    )
    if not plain:
        return None
    args = full_command[4:]
    function = _flag(args, "--function_to_execute")
    executor_input = _flag(args, "--executor_input")
    if function is None or executor_input is None:
        return None
    return ExecutorCall(full_command[3], function, executor_input, dict(env))


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_call(call: ExecutorCall) -> bool:
    """Run one task's executor here; True if it succeeded. Its traceback goes to stdout, where
    kfp.local streams a subprocess task's output."""
    from kfp.dsl import executor, utils

    with _TASK_LOCK, tempfile.TemporaryDirectory(prefix="kfp-step-") as program_path:
        Path(program_path, f"{_MODULE_NAME}.py").write_text(call.source)
        saved_path, saved_print = list(sys.path), builtins.print
        builtins.print = _PRINT
        try:
            with _environment(call.env):
                module = utils.load_module(_MODULE_NAME, program_path)
                task = executor.Executor(
                    executor_input=json.loads(call.executor_input),
                    function_to_execute=getattr(module, call.function),
                )
                task.execute()
            return True
        except SystemExit as exc:
            if exc.code in (None, 0):
                return True
            print(f"step {call.function} exited with {exc.code}", flush=True)
            return False
        except Exception:
            print(traceback.format_exc(), end="", flush=True)
            return False
        finally:
            builtins.print = saved_print
            sys.path[:] = saved_path
            sys.modules.pop(_MODULE_NAME, None)


class WarmTaskHandler(subprocess_task_handler.SubprocessTaskHandler):
    """kfp.local's subprocess task handler, with the plain executor call run in-process."""

    def run(self) -> status.Status:
        call = executor_call(self.full_command, self.env_vars)
        if call is None or self.runner.use_venv:
            return super().run()
        return status.Status.SUCCESS if run_call(call) else status.Status.FAILURE


@contextmanager
def warm_steps() -> Iterator[None]:
    """Within this block, kfp.local's `SubprocessRunner(use_venv=False)` runs tasks in-process.

    kfp.local picks the handler class from `subprocess_task_handler` when each task starts,
    and has no public hook for another; the class is swapped back on exit."""
    previous = subprocess_task_handler.SubprocessTaskHandler
    subprocess_task_handler.SubprocessTaskHandler = WarmTaskHandler
    try:
        yield
    finally:
        subprocess_task_handler.SubprocessTaskHandler = previous


@contextmanager
def subprocess_steps() -> Iterator[None]:
    """kfp.local's own behaviour: one process per task (the peer the warm path is measured
    against, and the fallback for a step that must not share the runner's process)."""
    yield
