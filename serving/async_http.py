"""The REST face of asynchronous inference, served by `V2App` when it has an `AsyncStore`.

- `POST /v2/models/{name}[/versions/{v}]/infer/async` with a V2 inference request as JSON:
  `202 Accepted`, `Location: /v2/models/{name}/infer/async/{id}` and
  `{"id", "model_name", "status": "pending", "location"}`. The id is the request's own `id`
  when it has one (so a client that retries a POST gets the same request, answered once),
  else a new one. A body that is not a V2 request is refused at once (400/422, as the
  synchronous route would), so a malformed body never reaches the queue; the payload rules
  (widths, missing sensors) are checked when it is scored, and their 4xx is its result.
- `GET /v2/models/{name}/infer/async/{id}`: the answer once there is one (the status and body
  a synchronous call would have had: 200 with the V2 response, or the 4xx/5xx error),
  `202` with the pending body while it waits, `404` for an id unknown or expired.

The request is accepted while the model is still loading: that is the point of a queue.
"""

from __future__ import annotations

import logging

from mlserver.errors import MLServerError
from redis.exceptions import RedisError

from loopline.serving import callers
from loopline.serving.async_messages import (
    AsyncMessageError,
    AsyncRequest,
    AsyncRoute,
    accepted_body,
    check_id,
    new_id,
    result_location,
)
from loopline.serving.async_store import AsyncStore
from loopline.serving.runtime_slot import ModelNotFound, RuntimeSlot
from loopline.serving.v2_asgi import (
    HttpError,
    Receive,
    Scope,
    Send,
    error_body,
    header,
    read_body,
    refused_before_runtime,
    respond,
)
from loopline.serving.v2_rest import WireError, parse_infer_body

log = logging.getLogger(__name__)

PROTOCOL = "async"


async def handle_async(
    store: AsyncStore,
    slot: RuntimeSlot,
    max_body_bytes: int,
    scope: Scope,
    receive: Receive,
    send: Send,
    route: AsyncRoute,
) -> None:
    method: str = scope["method"]
    caller = header(scope, callers.HEADER_BYTES)
    subject = None
    try:
        if route.model != slot.name:
            raise ModelNotFound(route.model, slot.name)
        if route.request_id is None:
            if method != "POST":
                raise HttpError(405, f"method {method} not allowed here; use POST")
            runtime = slot.runtime
            if runtime is not None:  # a model still loading has no verifier: header only
                authorization = header(scope, b"authorization")
                subject = await runtime.identify(authorization, PROTOCOL, caller)
            request_id = await _submit(
                store, slot, max_body_bytes, scope, receive, AsyncRequest("", b"", caller, subject)
            )
            location = result_location(slot.name, request_id)
            await respond(
                send,
                202,
                accepted_body(slot.name, request_id, location),
                [(b"location", location.encode())],
            )
            return
        if method != "GET":
            raise HttpError(405, f"method {method} not allowed here; use GET")
        await _poll(store, slot.name, route.request_id, send)
    except (HttpError, WireError, ModelNotFound) as exc:
        status = exc.status if isinstance(exc, HttpError) else exc.status_code
        if method == "POST":
            refused_before_runtime(slot.runtime, exc, status, PROTOCOL, caller, subject)
        await respond(send, status, error_body(str(exc)))
    except MLServerError as exc:  # `identify` refused it (require_caller_token), counted
        await respond(send, exc.status_code, error_body(str(exc)))
    except RedisError as exc:
        log.warning("async store unavailable: %s", exc)
        message = f"asynchronous inference store unavailable ({type(exc).__name__}: {exc})"
        await respond(send, 503, error_body(message))


async def _submit(
    store: AsyncStore,
    slot: RuntimeSlot,
    max_body_bytes: int,
    scope: Scope,
    receive: Receive,
    who: AsyncRequest,
) -> str:
    """Queue the request; `who` carries its caller and verified subject."""
    body, header_length = await read_body(scope, receive, max_body_bytes)
    if header_length is not None:
        raise WireError(
            "asynchronous requests are JSON: send the tensors in 'data', without "
            "Inference-Header-Content-Length",
            422,
        )
    parsed = parse_infer_body(body, None)
    selection = parsed.outputs
    if selection.binary_by_default or any(selection.binary.values()):
        raise WireError("binary_data_output is not available for asynchronous results", 422)
    runtime = slot.runtime
    if runtime is not None:
        selection.check([o.name for o in runtime.outputs or ()])
    try:
        request_id = new_id() if parsed.request.id is None else check_id(parsed.request.id)
    except AsyncMessageError as exc:
        raise WireError(str(exc), 422) from None
    added = await store.submit(AsyncRequest(request_id, body, who.caller, who.subject))
    if not added:
        log.info(
            "async request %s for %s was accepted before: not queued again", request_id, slot.name
        )
    return request_id


async def _poll(store: AsyncStore, model: str, request_id: str, send: Send) -> None:
    result = await store.result(request_id)
    if result is not None:
        await respond(send, result.status, result.body)
        return
    if await store.known(request_id):
        location = result_location(model, request_id)
        await respond(
            send,
            202,
            accepted_body(model, request_id, location),
            [(b"location", location.encode())],
        )
        return
    raise HttpError(
        404, f"no asynchronous request {request_id!r} for model {model!r} (unknown or expired)"
    )
