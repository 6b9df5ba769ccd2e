"""Why a demo run stopped early: each names the piece or the stage, for the report."""

from __future__ import annotations


class MissingPiece(RuntimeError):
    """A part of Loopline the demo needs is not in this tree."""


class BrokenPiece(RuntimeError):
    """A part of Loopline the demo needs is in the tree but failed; the message says how."""


class ModelFailed(RuntimeError):
    """The Model went to phase Failed; the message is its status message."""
