"""Turning a subsystem's own errors into one-line CLI messages.

The cluster, image and other subsystems raise errors whose text already says what to do
(which package to install, which command to run); a traceback would bury that line.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

import click

P = ParamSpec("P")
R = TypeVar("R")


def friendly_errors(
    *kinds: type[Exception],
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator that prints `kinds` of error as a ClickException (exit 1, message only);
    any other exception is a bug and keeps its traceback."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        @wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return func(*args, **kwargs)
            except kinds as exc:
                raise click.ClickException(str(exc)) from exc

        return wrapper

    return decorate
