"""What asynchronous inference puts into Redis and reads back, without a connection.

Keys of one model (`<prefix>` is `AsyncSettings.prefix`, `loopline:async` by default):

- `<prefix>:<model>:requests`: the request stream. One entry per request with the fields
  `id` (the request id), `body` (a V2 inference request as JSON) and optionally `caller`
  (the `Loopline-Caller` of the usage metrics) and `subject` (the verified identity of the
  submitting request's bearer token, `token_review`: whoever may write to this Redis is
  trusted with it). Producers that speak Redis `XADD` here.
- `<prefix>:<model>:result:<id>`: the stored answer (`StoredResult` as JSON), with a TTL.
- `<prefix>:<model>:accepted:<id>`: marks an id as accepted (same TTL), so a retried `POST`
  or a duplicate entry is scored and answered once.
- `<prefix>:<model>:results`: the optional result stream (`id`, `status`, `body`).

The consumer group is `<prefix>:<model>:workers`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
ID_FIELD = "id"
BODY_FIELD = "body"
CALLER_FIELD = "caller"
SUBJECT_FIELD = "subject"
ASYNC_SEGMENT = "async"


class AsyncMessageError(ValueError):
    """A request stream entry or a request id that cannot be used; the message names the
    field and what is allowed."""


@dataclass(frozen=True)
class StreamKeys:
    """The Redis keys of one model's asynchronous inference."""

    prefix: str
    model: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{self.model}"

    @property
    def requests(self) -> str:
        return f"{self.base}:requests"

    @property
    def group(self) -> str:
        return f"{self.base}:workers"

    @property
    def results(self) -> str:
        return f"{self.base}:results"

    def result(self, request_id: str) -> str:
        return f"{self.base}:result:{request_id}"

    def accepted(self, request_id: str) -> str:
        return f"{self.base}:accepted:{request_id}"


def check_id(request_id: object, field: str = ID_FIELD) -> str:
    """A request id usable in a key and a URL path segment, or an error naming `field`."""
    if not isinstance(request_id, str) or not ID_PATTERN.match(request_id):
        raise AsyncMessageError(
            f"{field} must be 1-128 characters of letters, digits and . _ : - starting with "
            f"a letter or digit, got {request_id!r}"
        )
    return request_id


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AsyncRequest:
    """One request as it travels on the request stream."""

    id: str
    body: bytes
    caller: str | None = None
    subject: str | None = None  # the verified identity (`token_review`), outranks `caller`

    def fields(self) -> dict[str, bytes]:
        out = {ID_FIELD: self.id.encode(), BODY_FIELD: self.body}
        if self.caller:
            out[CALLER_FIELD] = self.caller.encode()
        if self.subject:
            out[SUBJECT_FIELD] = self.subject.encode()
        return out


def _text(fields: Mapping[Any, Any], name: str) -> str | None:
    value = fields.get(name.encode(), fields.get(name))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_request(fields: Mapping[Any, Any]) -> AsyncRequest:
    """An `XREADGROUP` entry's fields (bytes or str keys) as a request, or an error naming
    the missing or malformed field."""
    request_id = check_id(_text(fields, ID_FIELD), "stream field 'id'")
    body = fields.get(BODY_FIELD.encode(), fields.get(BODY_FIELD))
    if body is None or len(body) == 0:
        raise AsyncMessageError(
            f"stream field 'body' is missing in request {request_id!r}: it must hold the V2 "
            "inference request as JSON"
        )
    return AsyncRequest(
        id=request_id,
        body=body if isinstance(body, bytes) else body.encode(),
        caller=_text(fields, CALLER_FIELD),
        subject=_text(fields, SUBJECT_FIELD),
    )


@dataclass(frozen=True)
class StoredResult:
    """The answer to one request: the HTTP status a synchronous call would have had, and
    its body (the V2 response, or `{"error": ...}`)."""

    status: int
    body: bytes

    def encode(self) -> bytes:
        return json.dumps({"status": self.status, "body": self.body.decode()}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> StoredResult:
        doc = json.loads(raw)
        return cls(status=int(doc["status"]), body=str(doc["body"]).encode())


def error_result(status: int, message: str) -> StoredResult:
    return StoredResult(status, json.dumps({"error": message}).encode())


def accepted_body(model: str, request_id: str, location: str) -> bytes:
    """The `202 Accepted` body of a submission and of a poll of a request not done yet."""
    return json.dumps(
        {"id": request_id, "model_name": model, "status": "pending", "location": location}
    ).encode()


def result_location(model: str, request_id: str) -> str:
    return f"/v2/models/{model}/infer/{ASYNC_SEGMENT}/{request_id}"


@dataclass(frozen=True)
class AsyncRoute:
    """`POST /v2/models/{m}[/versions/{v}]/infer/async` (id None) or
    `GET /v2/models/{m}/infer/async/{id}`."""

    model: str
    request_id: str | None


def async_route(path: str) -> AsyncRoute | None:
    """The asynchronous route of `path`, or None when it is not one (an invalid id in a
    poll is an `AsyncMessageError`)."""
    parts = path.rstrip("/").split("/")
    if len(parts) < 6 or parts[1:3] != ["v2", "models"] or not parts[3]:
        return None
    rest = parts[4:]
    if len(rest) >= 2 and rest[0] == "versions":
        rest = rest[2:]
    if rest == ["infer", ASYNC_SEGMENT]:
        return AsyncRoute(parts[3], None)
    if len(rest) == 3 and rest[:2] == ["infer", ASYNC_SEGMENT]:
        return AsyncRoute(parts[3], check_id(rest[2], "request id in the path"))
    return None


def id_age_seconds(entry_id: bytes | str, now_s: float) -> float:
    """Age of a stream entry from its id (`<ms>-<seq>`, the time Redis added it)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    millis = int(text.split("-", 1)[0])
    return max(0.0, now_s - millis / 1000.0)
