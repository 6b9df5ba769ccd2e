"""Errors of the image build, each with a message a person can act on."""

from __future__ import annotations


class ImagesError(RuntimeError):
    """Base class: the CLI prints the message and exits non-zero, without a traceback."""


class MissingToolError(ImagesError):
    """A command the build needs is not installed; the message names the Debian package."""


class BuildFailedError(ImagesError):
    """mmdebstrap, podman or skopeo exited non-zero; carries the command's tail of output."""
