"""A generic V2 client: NVIDIA's tritonclient, driven only by the model's metadata.

Run as `python -m tests.integration.triton_client <request.json>`; prints a JSON answer. It
runs in its own process because tritonclient's gRPC stubs and MLServer's (which the test
process imports) define the same proto package and cannot share one process.

The request file holds the server URLs, the model name, the protocol (`http`, `http-json`
or `grpc`) and a table of named columns (a data set's rows). The client knows nothing about
the model's layout: it asks for the metadata, sends one tensor per listed input (taking the
column of that name, shaped and typed as the metadata says; an input marked optional whose
column is absent is left out) and reads back every listed output.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "BOOL": np.bool_}


def _array(column: list[Any], datatype: str, shape: list[int]) -> np.ndarray:
    n = len(column)
    dims = [n if d < 0 else d for d in shape]
    if datatype == "BYTES":
        return np.array([str(v).encode() for v in column], dtype=np.object_).reshape(dims)
    values = [np.nan if v is None else v for v in column]
    return np.asarray(values, dtype=_DTYPES[datatype]).reshape(dims)


def _optional(tensor: dict[str, Any]) -> bool:
    return bool((tensor.get("parameters") or {}).get("optional", False))


def run_http(job: dict[str, Any], binary: bool) -> dict[str, Any]:
    import tritonclient.http as http

    client = http.InferenceServerClient(job["http"])
    meta = client.get_model_metadata(job["model"])
    inputs = []
    for tensor in meta["inputs"]:
        if tensor["name"] not in job["columns"] and _optional(tensor):
            continue
        arr = _array(job["columns"][tensor["name"]], tensor["datatype"], tensor["shape"])
        inp = http.InferInput(tensor["name"], list(arr.shape), tensor["datatype"])
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    outputs = [http.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
    result = client.infer(job["model"], inputs, outputs=outputs)
    return {
        "metadata": meta,
        "outputs": {o["name"]: _plain(result.as_numpy(o["name"])) for o in meta["outputs"]},
        "response": result.get_response(),
    }


def run_grpc(job: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(job["grpc"])
    meta = client.get_model_metadata(job["model"], as_json=True)
    inputs = []
    for tensor in meta["inputs"]:
        params = {k: _param(v) for k, v in (tensor.get("parameters") or {}).items()}
        if tensor["name"] not in job["columns"] and params.get("optional"):
            continue
        shape = [int(d) for d in tensor["shape"]]
        arr = _array(job["columns"][tensor["name"]], tensor["datatype"], shape)
        inp = grpcclient.InferInput(tensor["name"], list(arr.shape), tensor["datatype"])
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    outputs = [grpcclient.InferRequestedOutput(o["name"]) for o in meta["outputs"]]
    result = client.infer(job["model"], inputs, outputs=outputs)
    return {
        "metadata": meta,
        "outputs": {o["name"]: _plain(result.as_numpy(o["name"])) for o in meta["outputs"]},
    }


def _param(value: dict[str, Any]) -> Any:
    """A gRPC `InferParameter` as JSON (`{"bool_param": true}`) to its value."""
    return next(iter(value.values())) if isinstance(value, dict) and value else value


def _plain(arr: np.ndarray | None) -> Any:
    if arr is None:
        return None
    if arr.dtype == np.object_:
        return [v.decode() if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()]
    return arr.reshape(-1).tolist()


def main(path: str) -> int:
    with open(path) as f:
        job = json.load(f)
    protocol = job["protocol"]
    answer = run_grpc(job) if protocol == "grpc" else run_http(job, binary=protocol == "http")
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
