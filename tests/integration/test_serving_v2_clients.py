"""Both hosts, side by side, as a generic Open Inference Protocol client sees them.

The lean server and MLServer each serve the same real bundle (random weights; its data set's
entity is `case_id`) on loopback at the same time, so every request goes to both and the
answers are compared. NVIDIA's tritonclient is the generic client: HTTP with binary tensor
data (its default), HTTP with JSON, and gRPC, reading nothing but the model's metadata
(`triton_client.py`, in a subprocess: its gRPC stubs cannot share a process with MLServer's).

Bad requests: the table in docs/serving.md ("Bad requests") is what both hosts must answer;
`test_each_bad_request_gets_the_documented_answer_from_both_hosts` reads it and checks each
row against both, so the table cannot drift from the servers.
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub

from loopline.data.schema import CORE_SENSORS, SENSORS
from loopline.serving.local import LocalModelSpec, LocalServingManager, ServerStatus
from loopline.serving.payload import FeatureLayout
from loopline.serving.scoring import score_batch
from tests.fixtures.serving import make_bundle, sensor_rows

NAME = "press-ae"
ENTITY = "case_id"
MAX_ROWS = 64
HOSTS = ("lean", "mlserver")
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "serving.md"
NONCORE = next(s for s in SENSORS if s not in CORE_SENSORS)


@pytest.fixture(scope="module")
def bundle_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose recorded data set roles name `case_id` as the entity."""
    bundle = make_bundle(seed=3)
    bundle.metadata["roles"] = {
        "entity": ENTITY,
        "timestamp": "ts",
        "features": list(SENSORS),
        "core_features": list(CORE_SENSORS),
        "label": "is_fault",
    }
    return bundle.save(tmp_path_factory.mktemp("bundle") / "model")


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory, bundle_folder: Path
) -> Iterator[dict[str, ServerStatus]]:
    """The same model under the same name on both hosts at once."""
    managers = {
        host: LocalServingManager(tmp_path_factory.mktemp(host), ready_timeout_s=180)
        for host in HOSTS
    }
    try:
        started = {}
        for host, manager in managers.items():
            spec = LocalModelSpec(
                name=NAME, model_uri=str(bundle_folder), max_rows=MAX_ROWS, server=host
            )
            started[host] = manager.start(spec)
        yield started
    finally:
        for manager in managers.values():
            manager.close()


def table(rows: int = 24) -> dict[str, list[Any]]:
    """A data set's rows by column: every sensor (a non-core one missing in a few rows, so
    the fallback answers those) and the entity."""
    x = sensor_rows(rows, seed=5).astype(np.float64)
    columns: dict[str, list[Any]] = {name: x[:, i].tolist() for i, name in enumerate(SENSORS)}
    for r in (2, 7):
        columns[NONCORE][r] = None
    columns[ENTITY] = [f"case-{i}" for i in range(rows)]
    return columns


def expected_scores(bundle_folder: Path, columns: dict[str, list[Any]]) -> list[float]:
    from loopline.models.bundle import ModelBundle

    bundle = ModelBundle.load_dir(bundle_folder)
    x = np.array(
        [[np.nan if v is None else v for v in columns[name]] for name in SENSORS], np.float32
    ).T
    layout = FeatureLayout.of(SENSORS, CORE_SENSORS)
    scored = score_batch(bundle, np.ascontiguousarray(x), layout)
    return scored.outputs["anomaly_score"].astype(np.float32).tolist()  # type: ignore[no-any-return]


def tritonclient(status: ServerStatus, protocol: str, columns: dict[str, Any], tmp: Path) -> Any:
    job = tmp / f"job-{protocol}.json"
    job.write_text(
        json.dumps(
            {
                "http": status.endpoints.rest.removeprefix("http://"),
                "grpc": status.endpoints.grpc,
                "model": NAME,
                "protocol": protocol,
                "columns": columns,
            }
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.triton_client", str(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_metadata_lists_one_layout_the_entity_and_the_version(
    servers: dict[str, ServerStatus],
) -> None:
    answers = [
        httpx.get(f"{s.endpoints.rest}/v2/models/{NAME}", timeout=10).json()
        for s in servers.values()
    ]
    for meta in answers:
        assert [t["name"] for t in meta["inputs"]] == [*SENSORS, ENTITY]
        entity = meta["inputs"][-1]
        assert entity["datatype"] == "BYTES"
        assert entity["parameters"] == {"role": "entity", "optional": True}
        assert meta["versions"], meta
        alternative = json.loads(meta["parameters"]["alternative_inputs"])
        assert alternative[0]["name"] == "features"
        assert alternative[0]["columns"] == list(SENSORS)
    assert answers[0]["inputs"] == answers[1]["inputs"]
    assert answers[0]["parameters"] == answers[1]["parameters"]
    assert answers[0]["versions"] == answers[1]["versions"]


@pytest.mark.parametrize("host", HOSTS)
def test_tritonclient_follows_the_metadata_on_every_path(
    host: str, servers: dict[str, ServerStatus], bundle_folder: Path, tmp_path: Path
) -> None:
    """HTTP with binary data, HTTP with JSON and gRPC give the same scores, bit for bit, and
    they are the bundle's own (rows with a missing non-core sensor from the fallback)."""
    columns = table()
    answers = {
        protocol: tritonclient(servers[host], protocol, columns, tmp_path)
        for protocol in ("http", "http-json", "grpc")
    }
    scores = {p: a["outputs"]["anomaly_score"] for p, a in answers.items()}
    assert scores["http"] == scores["http-json"] == scores["grpc"]
    np.testing.assert_allclose(scores["http"], expected_scores(bundle_folder, columns), rtol=1e-5)
    models = answers["http"]["outputs"]["model"]
    assert [i for i, m in enumerate(models) if m == "fallback"] == [2, 7]
    for answer in answers.values():
        assert answer["outputs"]["model"] == models
    binary = answers["http"]["response"]["outputs"][0]
    assert binary["parameters"]["binary_data_size"] == 4 * 24
    assert "data" not in binary


def test_both_hosts_score_alike_and_accept_the_described_alternative(
    servers: dict[str, ServerStatus], tmp_path: Path
) -> None:
    """The `features` matrix, as the metadata's parameters describe it, scores the same rows
    the same as the per-feature inputs, on both hosts; and the optional entity may be left out."""
    columns = table()
    by_host = {}
    for host, status in servers.items():
        meta = httpx.get(f"{status.endpoints.rest}/v2/models/{NAME}", timeout=10).json()
        spec = json.loads(meta["parameters"]["alternative_inputs"])[0]
        rows = [[columns[c][r] for c in spec["columns"]] for r in range(24)]
        body = {
            "inputs": [
                {
                    "name": spec["name"],
                    "datatype": spec["datatype"],
                    "shape": [24, len(spec["columns"])],
                    "data": rows,
                }
            ]
        }
        response = httpx.post(f"{status.endpoints.rest}/v2/models/{NAME}/infer", json=body)
        assert response.status_code == 200, response.text
        by_host[host] = response.json()["outputs"][0]["data"]
        without_entity = {k: v for k, v in columns.items() if k != ENTITY}
        per_feature = tritonclient(status, "http", without_entity, tmp_path)
        assert per_feature["outputs"]["anomaly_score"] == by_host[host]
    assert by_host["lean"] == by_host["mlserver"]


# -- bad requests: the documented table, checked against both hosts -------------------------


def _row(missing: str | None = None, nan_literal: bool = False) -> str:
    values = [
        ("NaN" if nan_literal else "null") if name == missing else f"{10.0 + i}"
        for i, name in enumerate(SENSORS)
    ]
    return "[" + ", ".join(values) + "]"


def _features(row: str, rows: int = 1) -> bytes:
    return (
        '{"inputs": [{"name": "features", "datatype": "FP32", '
        f'"shape": [{rows}, {len(SENSORS)}], "data": [{", ".join([row] * rows)}]}}]}}'
    ).encode()


def _binary(sizes: list[int], tail: bytes, header_length: int | None = None) -> tuple[bytes, dict]:
    inputs = [
        {"name": name, "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": s}}
        for name, s in zip(SENSORS, sizes, strict=False)
    ]
    head = json.dumps({"inputs": inputs}).encode()
    length = len(head) if header_length is None else header_length
    return head + tail, {"Inference-Header-Content-Length": str(length)}


_FULL = struct.pack(f"<{len(SENSORS)}f", *range(10, 10 + len(SENSORS)))
_JSON = {"content-type": "application/json"}

# case id -> (body, headers, path suffix); the expected answers are the docs table's.
REST_CASES: dict[str, tuple[bytes, dict[str, str], str]] = {
    "not-json": (b'{"inputs": [', _JSON, "infer"),
    "not-v2": (b'{"instances": [[1.0]]}', _JSON, "infer"),
    "not-an-object": (b"[1, 2]", _JSON, "infer"),
    "text-plain": (_features(_row()), {"content-type": "text/plain"}, "infer"),
    "nan-literal-noncore": (_features(_row(NONCORE, nan_literal=True)), _JSON, "infer"),
    "nan-literal-core": (_features(_row(CORE_SENSORS[0], nan_literal=True)), _JSON, "infer"),
    "missing-core": (_features(_row(CORE_SENSORS[0])), _JSON, "infer"),
    "unknown-input": (
        b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]}',
        _JSON,
        "infer",
    ),
    "shape-mismatch": (
        _features(_row()).replace(f'"shape": [1, {len(SENSORS)}]'.encode(), b'"shape": [2, 12]'),
        _JSON,
        "infer",
    ),
    "too-many-rows": (_features(_row(), MAX_ROWS + 1), _JSON, "infer"),
    "wrong-datatype": (
        _features(_row()).replace(b'"FP32"', b'"INT64"'),
        _JSON,
        "infer",
    ),
    "unknown-output": (
        _features(_row())[:-1] + b', "outputs": [{"name": "nope"}]}',
        _JSON,
        "infer",
    ),
    "unknown-model": (_features(_row()), _JSON, "infer?model=other"),
    "binary-header-too-long": (*_binary([4] * 12, _FULL, header_length=10**6), "infer"),
    "binary-sizes-do-not-add-up": (*_binary([4] * 12, _FULL + b"\x00\x00\x00\x00"), "infer"),
    "binary-torn-value": (*_binary([3] + [4] * 11, _FULL[:-1]), "infer"),
    # not inference: the same words on both hosts too (not counted: no request was scored)
    "metadata-unknown-model": (b"", {}, "GET /v2/models/other"),
    "ready-unknown-model": (b"", {}, "GET /v2/models/other/ready"),
    "infer-with-get": (b"", {}, f"GET /v2/models/{NAME}/infer"),
    "unknown-path": (b"", {}, "GET /v2/nothing/here"),
}


def docs_table() -> dict[str, tuple[str, str, str]]:
    """case id -> (REST status, gRPC code, message excerpt) from docs/serving.md."""
    text = DOCS.read_text()
    section = text.split("### Bad requests", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0] != "`case`":
            rows[cells[0].strip("`")] = (cells[2], cells[3].strip("`"), cells[4].strip("`"))
    return rows


def _send(status: ServerStatus, case: str) -> httpx.Response:
    """POST the case's body to the model's infer URL, or send what its target says
    (`METHOD /path`, or `infer?model=<name>` for another model's infer URL)."""
    body, headers, target = REST_CASES[case]
    rest = status.endpoints.rest
    if target.startswith("infer?model="):
        url = f"{rest}/v2/models/{target.split('=')[1]}/infer"
    elif " " in target:
        method, path = target.split(" ", 1)
        return httpx.request(method, f"{rest}{path}", content=body or None, timeout=30)
    else:
        url = f"{rest}/v2/models/{NAME}/{target}"
    return httpx.post(url, content=body, headers=headers, timeout=30)


def test_the_docs_table_covers_every_case() -> None:
    documented = docs_table()
    assert sorted(documented) == sorted([*REST_CASES, *GRPC_CASES])


@pytest.mark.parametrize("case", sorted(REST_CASES))
def test_each_bad_request_gets_the_documented_answer_from_both_hosts(
    case: str, servers: dict[str, ServerStatus]
) -> None:
    status, _, excerpt = docs_table()[case]
    answers = []
    for host, server in servers.items():
        response = _send(server, case)
        assert str(response.status_code) == status, (host, response.text)
        if response.status_code != 200:
            assert set(response.json()) == {"error"}, (host, response.text)
            assert excerpt in response.json()["error"], (host, response.text)
            answers.append(response.json())
        else:
            outputs = response.json()["outputs"]
            answers.append(next(o for o in outputs if o["name"] == "model"))
    assert answers[0] == answers[1]


def _grpc_request(**kw: Any) -> Any:
    request = pb.ModelInferRequest(model_name=kw.pop("model", NAME))
    for name in kw.pop("names", SENSORS):
        tensor = request.inputs.add(name=name, datatype="FP32")
        tensor.shape.extend(kw.get("shape", [1]))
        if "raw" not in kw:
            tensor.contents.fp32_contents.extend([10.0])
    if "raw" in kw:
        request.raw_input_contents.extend(kw["raw"])
    return request


GRPC_CASES: dict[str, Any] = {
    "grpc-torn-raw-contents": lambda: _grpc_request(raw=[b"\0" * 6] * 12),
    "grpc-raw-count-mismatch": lambda: _grpc_request(raw=[b"\0" * 4] * 3),
    "grpc-huge-shape": lambda: _grpc_request(shape=[10**12]),
    "grpc-unknown-model": lambda: _grpc_request(model="other"),
    "grpc-missing-core": lambda: _grpc_request(names=[s for s in SENSORS if s != CORE_SENSORS[0]]),
}


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_each_bad_grpc_request_gets_the_documented_code_from_both_hosts(
    case: str, servers: dict[str, ServerStatus]
) -> None:
    _, code, excerpt = docs_table()[case]
    details = []
    for host, server in servers.items():
        with (
            grpc.insecure_channel(server.endpoints.grpc) as channel,
            pytest.raises(grpc.RpcError) as caught,
        ):
            GRPCInferenceServiceStub(channel).ModelInfer(GRPC_CASES[case](), timeout=30)
        error = caught.value
        assert error.code().name == code, (host, error.details())
        assert excerpt in error.details(), (host, error.details())
        details.append(error.details())
    assert details[0] == details[1]


def _client_errors(status: ServerStatus) -> float:
    text = httpx.get(status.endpoints.metrics, timeout=10).text
    pattern = re.compile(
        r'^loopline_inference_requests_total\{[^}]*outcome="client_error"[^}]*\} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


def test_every_client_error_is_counted_and_logged_once_without_a_traceback(
    servers: dict[str, ServerStatus],
) -> None:
    bad = [c for c in REST_CASES if docs_table()[c][0] != "200" and " " not in REST_CASES[c][2]]
    for host, server in servers.items():
        before = _client_errors(server)
        log_before = server.log_path.read_text()
        for case in bad:
            _send(server, case)
        for case in GRPC_CASES:
            with (
                grpc.insecure_channel(server.endpoints.grpc) as channel,
                pytest.raises(grpc.RpcError),
            ):
                GRPCInferenceServiceStub(channel).ModelInfer(GRPC_CASES[case](), timeout=30)
        assert _client_errors(server) - before == len(bad) + len(GRPC_CASES), host
        logged = server.log_path.read_text()[len(log_before) :]
        assert logged.count("refused a ") == len(bad) + len(GRPC_CASES), (host, logged)
        assert "Traceback" not in logged, (host, logged)
        assert " ERROR " not in logged, (host, logged)
