"""V2 inference clients for the simulated plant: REST (JSON) and gRPC (MLServer's generated
stubs), one FP32 input per feature plus a BYTES `machine_id` input, exactly as any V2 client
would send them; the answers decoded into one `Answer` shape whichever protocol carried them.
Latencies are measured on the client, around the call.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import httpx
import numpy as np
import pandas as pd
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

from loopline.data.schema import ENTITY

MACHINE_ID_INPUT = "machine_id"
# Who calls: the model servers count usage per caller from this header (gRPC metadata in
# lowercase), docs/serving.md.
CALLER_HEADER = "Loopline-Caller"


# -- encoding and decoding (pure) -------------------------------------------------------------


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return np.ascontiguousarray(frame[name].to_numpy(dtype=np.float32))


def rest_payload(frame: pd.DataFrame, features: Sequence[str]) -> dict[str, Any]:
    """A V2 REST request body: one FP32 input per feature; NaN travels as JSON null."""
    inputs: list[dict[str, Any]] = []
    n = len(frame)
    for name in features:
        values = _column(frame, name)
        data: list[float | None] = values.tolist()
        if np.isnan(values).any():
            data = [None if math.isnan(v) else v for v in data]  # type: ignore[arg-type]
        inputs.append({"name": name, "datatype": "FP32", "shape": [n], "data": data})
    inputs.append(
        {
            "name": MACHINE_ID_INPUT,
            "datatype": "BYTES",
            "shape": [n],
            "data": [str(m) for m in frame[ENTITY]],
        }
    )
    return {"inputs": inputs}


def grpc_request(
    frame: pd.DataFrame, features: Sequence[str], model_name: str
) -> pb.ModelInferRequest:
    """The same request as a gRPC `ModelInferRequest` (NaN is a valid fp32 value there)."""
    n = len(frame)
    inputs = [
        pb.ModelInferRequest.InferInputTensor(
            name=name,
            datatype="FP32",
            shape=[n],
            contents=pb.InferTensorContents(fp32_contents=_column(frame, name).tolist()),
        )
        for name in features
    ]
    inputs.append(
        pb.ModelInferRequest.InferInputTensor(
            name=MACHINE_ID_INPUT,
            datatype="BYTES",
            shape=[n],
            contents=pb.InferTensorContents(
                bytes_contents=[str(m).encode() for m in frame[ENTITY]]
            ),
        )
    )
    return pb.ModelInferRequest(model_name=model_name, inputs=inputs)


@dataclass
class Answer:
    """What the server said about each row of one request (flat lists, request order)."""

    anomaly_score: list[float | None] = field(default_factory=list)
    threshold: list[float | None] = field(default_factory=list)
    is_anomaly: list[bool] = field(default_factory=list)
    model: list[str] = field(default_factory=list)  # "primary" | "fallback"
    model_version: str = ""
    # Whether the drift monitor finds the answering version stale ("ok" | "stale" | "unknown")
    # and the entity's debounced alarm after the row ("active" | "inactive"); empty from a
    # server that does not send them.
    model_state: list[str] = field(default_factory=list)
    alarm_event: list[str] = field(default_factory=list)

    @classmethod
    def from_outputs(cls, outputs: dict[str, list[Any]]) -> Answer:
        def floats(name: str) -> list[float | None]:
            return [None if v is None else float(v) for v in outputs.get(name, [])]

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        versions = outputs.get("model_version") or [""]
        return cls(
            anomaly_score=floats("anomaly_score"),
            threshold=floats("threshold"),
            is_anomaly=[bool(v) for v in outputs.get("is_anomaly", [])],
            model=[text(v) for v in outputs.get("model", [])],
            model_version=text(versions[0]),
            model_state=[text(v) for v in outputs.get("model_state", [])],
            alarm_event=[text(v) for v in outputs.get("alarm_event", [])],
        )

    @property
    def anomalies(self) -> int:
        return sum(self.is_anomaly)

    @property
    def fallback_rows(self) -> int:
        return sum(1 for m in self.model if m == "fallback")

    @property
    def stale_anomalies(self) -> int:
        """Anomalous rows answered by a version the drift monitor finds stale: the threshold
        verdicts the alarm logic holds back."""
        return sum(
            1
            for flagged, state in zip(self.is_anomaly, self.model_state, strict=False)
            if flagged and state == "stale"
        )

    @property
    def state(self) -> str:
        """The request's model state: "stale" if any row's is, else "unknown" if any row's
        is, else "ok"; "" when the server sent none."""
        states = set(self.model_state)
        for state in ("stale", "unknown", "ok"):
            if state in states:
                return state
        return next(iter(sorted(states)), "")


def _flat(data: Any) -> list[Any]:
    data = getattr(data, "root", data)
    return list(np.asarray(data, dtype=object).reshape(-1)) if data is not None else []


_CONTENTS = {
    "BOOL": ("bool_contents", np.bool_),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", None),
}


def _raw_bytes(raw: bytes) -> list[bytes]:
    """V2 raw BYTES: each element is a 4-byte little-endian length and the bytes."""
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i : i + 4], "little")
        out.append(raw[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def grpc_outputs(reply: pb.ModelInferResponse) -> dict[str, list[Any]]:
    """Output name -> flat values, from typed contents or `raw_output_contents`.

    (MLServer's own converter would do this, but it calls pydantic's deprecated `construct`.)
    """
    outputs: dict[str, list[Any]] = {}
    raw = list(reply.raw_output_contents)
    for i, tensor in enumerate(reply.outputs):
        field_name, dtype = _CONTENTS.get(tensor.datatype, (None, None))
        if raw:
            if tensor.datatype == "BYTES":
                outputs[tensor.name] = list(_raw_bytes(raw[i]))
            elif dtype is not None:
                outputs[tensor.name] = np.frombuffer(raw[i], dtype=dtype).tolist()
            continue
        if field_name is not None:
            values = list(getattr(tensor.contents, field_name))
            if dtype is np.float32 or dtype is np.float64:
                values = [None if math.isnan(v) else v for v in values]
            outputs[tensor.name] = values
    return outputs


class InferError(Exception):
    """The server refused or failed a request; `status` is the HTTP code or gRPC status."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


# -- clients ----------------------------------------------------------------------------------


class InferClient(Protocol):
    protocol: str
    caller: str

    def infer(self, frame: pd.DataFrame) -> Answer: ...

    def close(self) -> None: ...


def json_headers(caller: str) -> dict[str, str]:
    """A V2 JSON request's headers, naming the caller when it has a name."""
    headers = {"content-type": "application/json"}
    if caller:
        headers[CALLER_HEADER] = caller
    return headers


class RestClient:
    """V2 REST over one keep-alive HTTP connection."""

    protocol = "rest"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        features: Sequence[str],
        timeout: float = 10.0,
        *,
        caller: str = "",
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/v2/models/{model_name}/infer"
        self.features = list(features)
        self.caller = caller
        self._headers = json_headers(caller)
        self._http = httpx.Client(timeout=timeout)

    def infer(self, frame: pd.DataFrame) -> Answer:
        body = json.dumps(rest_payload(frame, self.features), allow_nan=False)
        try:
            response = self._http.post(self.url, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            raise InferError("unreachable", str(exc)) from exc
        if response.status_code != 200:
            raise InferError(str(response.status_code), response.text[:300])
        doc = response.json()
        return Answer.from_outputs({o["name"]: _flat(o["data"]) for o in doc.get("outputs", [])})

    def close(self) -> None:
        self._http.close()


class GrpcClient:
    """V2 gRPC through MLServer's generated `GRPCInferenceService` stub."""

    protocol = "grpc"

    def __init__(
        self,
        target: str,
        model_name: str,
        features: Sequence[str],
        timeout: float = 10.0,
        *,
        caller: str = "",
    ) -> None:
        self.model_name = model_name
        self.features = list(features)
        self.timeout = timeout
        self.caller = caller
        self._metadata = ((CALLER_HEADER.lower(), caller),) if caller else None
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def infer(self, frame: pd.DataFrame) -> Answer:
        request = grpc_request(frame, self.features, self.model_name)
        try:
            reply = self._stub.ModelInfer(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise InferError(getattr(code, "name", "UNKNOWN"), str(details)[:300]) from exc
        return Answer.from_outputs(grpc_outputs(reply))

    def close(self) -> None:
        self._channel.close()


class AsyncRestClient:
    """V2 asynchronous inference over REST (docs/serving.md): `submit` queues a request under
    its own id (`202 Accepted`), `poll` fetches its answer once a worker has scored it."""

    protocol = "async"

    def __init__(
        self,
        base_url: str,
        model_name: str,
        features: Sequence[str],
        timeout: float = 10.0,
        *,
        caller: str = "",
    ) -> None:
        self.base = f"{base_url.rstrip('/')}/v2/models/{model_name}/infer/async"
        self.features = list(features)
        self.caller = caller
        self._headers = json_headers(caller)
        self._http = httpx.Client(timeout=timeout)

    def submit(self, frame: pd.DataFrame, request_id: str) -> str:
        """Queue one request; returns the id the server accepted it under."""
        body = dict(rest_payload(frame, self.features), id=request_id)
        try:
            response = self._http.post(
                self.base, content=json.dumps(body, allow_nan=False), headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise InferError("unreachable", str(exc)) from exc
        if response.status_code != 202:
            raise InferError(str(response.status_code), response.text[:300])
        return str(response.json().get("id", request_id))

    def poll(self, request_id: str) -> Answer | None:
        """The answer, None while it is pending; `InferError` for a refused or lost one."""
        try:
            response = self._http.get(f"{self.base}/{request_id}")
        except httpx.HTTPError as exc:
            raise InferError("unreachable", str(exc)) from exc
        if response.status_code == 202:
            return None
        if response.status_code != 200:
            raise InferError(str(response.status_code), response.text[:300])
        doc = response.json()
        return Answer.from_outputs({o["name"]: _flat(o["data"]) for o in doc.get("outputs", [])})

    def close(self) -> None:
        self._http.close()
