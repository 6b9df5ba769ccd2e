"""What MLServer copied of a request's HTTP headers or gRPC metadata, read by the runtime."""

from __future__ import annotations

from typing import Any

from mlserver.types import InferenceRequest

from loopline.serving import callers


def _headers(request: InferenceRequest) -> dict[str, Any] | None:
    params = request.parameters
    headers = getattr(params, "headers", None) if params is not None else None
    return headers if headers and isinstance(headers, dict) else None


def header_caller(request: InferenceRequest, name: str = callers.HEADER) -> str | None:
    """The `Loopline-Caller` header (or another) MLServer copied into `parameters.headers`
    (REST headers and gRPC metadata both arrive lowercased there)."""
    headers = _headers(request)
    value = headers.get(name) if headers is not None else None
    return value if isinstance(value, str) else None


def detect_protocol(request: InferenceRequest) -> str:
    """REST or gRPC, from the headers MLServer copies into `parameters.headers`."""
    headers = _headers(request)
    if headers is None:
        return "unknown"
    content_type = str(headers.get("content-type", ""))
    agent = str(headers.get("user-agent", ""))
    if content_type.startswith("application/grpc") or agent.startswith("grpc"):
        return "grpc"
    return "rest"
