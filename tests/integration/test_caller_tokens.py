"""Callers identified by their Kubernetes ServiceAccount tokens, verified by a real API server.

Both model server hosts (lean and MLServer) run against the session's local control plane
(kube-apiserver with kwok): two ServiceAccounts get real tokens from the TokenRequest API,
and requests with either token (REST and gRPC, with and without a `Loopline-Caller` header
that claims someone else), with a forged token and with none are counted per verified caller
in the servers' `loopline_usage_requests_total`. Then the API server is frozen (SIGSTOP:
accepting connections, answering nothing, the slowest way to be down) and a request with a
token the servers have not seen is still answered, counted by its header, and the failure is
counted; with `require_caller_token` a request without a token is a 401 naming the header.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from kubernetes import client as k8s
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc.dataplane_pb2_grpc import GRPCInferenceServiceStub
from prometheus_client.parser import text_string_to_metric_families

from loopline.serving.local import LocalModelSpec, LocalServingManager, ServerStatus
from tests.fixtures.cluster import ClusterHandle
from tests.fixtures.serving import RegisteredModel, sensor_rows

NAME = "drill-ae"
HOSTS = ("lean", "mlserver")


def rest_body(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "features",
                "datatype": "FP32",
                "shape": list(x.shape),
                "data": x.ravel().tolist(),
            }
        ]
    }


def grpc_request(x: np.ndarray) -> Any:
    request = pb.ModelInferRequest(model_name=NAME)
    request.inputs.add(name="features", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return request


def service_account_token(api: k8s.ApiClient, namespace: str, name: str) -> str:
    core = k8s.CoreV1Api(api)
    core.create_namespaced_service_account(
        namespace, k8s.V1ServiceAccount(metadata=k8s.V1ObjectMeta(name=name))
    )
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    answer = core.create_namespaced_service_account_token(name, namespace, request)
    return str(answer.status.token)


def samples(status: ServerStatus, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(status.endpoints.metrics, timeout=10).text
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def usage(status: ServerStatus) -> dict[tuple[str, str], float]:
    """Requests per (caller, outcome), summed over versions."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(status, "loopline_usage_requests_total").items():
        found = dict(labels)
        key = (found["caller"], found["outcome"])
        out[key] = out.get(key, 0.0) + value
    return out


@pytest.fixture
def servers(
    tmp_path: Path, registered_model: RegisteredModel, cluster: ClusterHandle, redis_url: str
) -> Iterator[dict[str, ServerStatus]]:
    env = {
        "LOOPLINE_SERVING_CALLER_KUBECONFIG": str(cluster.kubeconfig),
        "LOOPLINE_SERVING_CALLER_VERIFY_WAIT_S": "2",  # generous on a busy 2-core machine
        "LOOPLINE_SERVING_CALLER_REVIEW_TIMEOUT_S": "1",
        "LOOPLINE_SERVING_CALLER_FAILURE_TTL_S": "30",
    }
    managers = {host: LocalServingManager(tmp_path / host, ready_timeout_s=180) for host in HOSTS}
    try:
        yield {
            host: manager.start(
                LocalModelSpec(
                    name=NAME,
                    model_uri=registered_model.champion_uri,
                    tracking_uri=registered_model.tracking_uri,
                    server=host,
                    # the lean host also takes asynchronous requests
                    extra_env={**env, "LOOPLINE_ASYNC_REDIS_URL": redis_url}
                    if host == "lean"
                    else env,
                )
            )
            for host, manager in managers.items()
        }
    finally:
        for manager in managers.values():
            manager.close()


def test_callers_are_counted_by_their_verified_service_account(
    servers: dict[str, ServerStatus],
    kube_api: k8s.ApiClient,
    namespace: str,
    cluster: ClusterHandle,
) -> None:
    historian = service_account_token(kube_api, namespace, "historian")
    mes = service_account_token(kube_api, namespace, "mes")
    fresh = service_account_token(kube_api, namespace, "late")
    sa_historian, sa_mes = f"sa:{namespace}/historian", f"sa:{namespace}/mes"
    for host, status in servers.items():
        url = status.endpoints.infer_url(NAME)
        with httpx.Client(timeout=30) as client:

            def post(headers: dict[str, str], url: str = url) -> httpx.Response:
                return client.post(url, json=rest_body(sensor_rows(2)), headers=headers)

            for _ in range(3):  # the token outranks what the header claims
                answer = post({"Authorization": f"Bearer {historian}", "Loopline-Caller": "mes"})
                assert answer.status_code == 200, (host, answer.text)
            for _ in range(2):
                answer = post({"Authorization": "Bearer not-a-token", "Loopline-Caller": "mes"})
                assert answer.status_code == 200, (host, answer.text)
            answer = post({"Loopline-Caller": "mes"})
            assert answer.status_code == 200, (host, answer.text)
            answer = post({})
            assert answer.status_code == 200, (host, answer.text)
        with grpc.insecure_channel(status.endpoints.grpc) as channel:
            stub = GRPCInferenceServiceStub(channel)
            for _ in range(4):
                stub.ModelInfer(
                    grpc_request(sensor_rows(1)),
                    metadata=(("authorization", f"Bearer {mes}"),),
                    timeout=30,
                )
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(
                    pb.ModelInferRequest(model_name=NAME),
                    metadata=(("authorization", f"Bearer {mes}"),),
                    timeout=30,
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        counts = usage(status)
        assert counts.get((sa_historian, "ok")) == 3, (host, counts)
        assert counts.get((sa_mes, "ok")) == 4, (host, counts)
        assert counts.get((sa_mes, "client_error")) == 1, (host, counts)
        assert counts.get(("unauthenticated", "ok")) == 2, (host, counts)
        assert counts.get(("mes", "ok")) == 1, (host, counts)
        assert counts.get(("unknown", "ok")) == 1, (host, counts)
        reviews = samples(status, "loopline_caller_token_reviews_total")
        assert reviews.get((("outcome", "verified"),)) == 2, (host, reviews)  # cached after
        assert reviews.get((("outcome", "invalid"),)) == 1, (host, reviews)

    apiserver = cluster.local.state()
    assert apiserver is not None
    pid = apiserver.process("kube-apiserver").pid
    os.kill(pid, signal.SIGSTOP)
    try:
        for host, status in servers.items():
            headers = {"Authorization": f"Bearer {fresh}", "Loopline-Caller": "qa"}
            with httpx.Client(timeout=30) as client:
                for _ in range(3):
                    answer = client.post(
                        status.endpoints.infer_url(NAME),
                        json=rest_body(sensor_rows(1)),
                        headers=headers,
                    )
                    assert answer.status_code == 200, (host, answer.text)
                # still verified from the cache while the API server is down
                answer = client.post(
                    status.endpoints.infer_url(NAME),
                    json=rest_body(sensor_rows(1)),
                    headers={"Authorization": f"Bearer {historian}"},
                )
                assert answer.status_code == 200, (host, answer.text)
            counts = usage(status)
            assert counts.get(("qa", "ok")) == 3, (host, counts)
            assert counts.get((sa_historian, "ok")) == 4, (host, counts)
            unverified = samples(status, "loopline_caller_unverified_requests_total")
            assert sum(unverified.values()) == 3, (host, unverified)
            reviews = samples(status, "loopline_caller_token_reviews_total")
            assert reviews.get((("outcome", "failed"),)) == 1, (host, reviews)
    finally:
        os.kill(pid, signal.SIGCONT)

    # An asynchronous request is counted by the verified identity of the request that
    # submitted it, carried with it through the stream to the worker.
    lean = servers["lean"]
    with httpx.Client(timeout=30) as client:
        accepted = client.post(
            lean.endpoints.infer_url(NAME) + "/async",
            json=rest_body(sensor_rows(2)),
            headers={"Authorization": f"Bearer {mes}", "Loopline-Caller": "qa"},
        )
        assert accepted.status_code == 202, accepted.text
        location = lean.endpoints.rest + accepted.headers["location"]

        def answered() -> httpx.Response | None:
            polled = client.get(location)
            return polled if polled.status_code == 200 else None

        result = cluster.wait_for(answered, timeout=60, what="the asynchronous answer")
        assert result.json()["outputs"], result.text
    counts = usage(lean)
    assert counts.get((sa_mes, "ok")) == 5, counts
    assert counts.get(("qa", "ok")) == 3, counts


def test_require_caller_token_answers_401_naming_the_header(
    tmp_path: Path,
    registered_model: RegisteredModel,
    cluster: ClusterHandle,
    kube_api: k8s.ApiClient,
    namespace: str,
) -> None:
    token = service_account_token(kube_api, namespace, "historian")
    manager = LocalServingManager(tmp_path / "lean", ready_timeout_s=180)
    try:
        status = manager.start(
            LocalModelSpec(
                name=NAME,
                model_uri=registered_model.champion_uri,
                tracking_uri=registered_model.tracking_uri,
                server="lean",
                extra_env={
                    "LOOPLINE_SERVING_CALLER_KUBECONFIG": str(cluster.kubeconfig),
                    "LOOPLINE_SERVING_REQUIRE_CALLER_TOKEN": "true",
                    "LOOPLINE_SERVING_CALLER_VERIFY_WAIT_S": "2",
                },
            )
        )
        url = status.endpoints.infer_url(NAME)
        with httpx.Client(timeout=30) as client:
            missing = client.post(url, json=rest_body(sensor_rows(1)))
            assert missing.status_code == 401, missing.text
            assert "Authorization: Bearer" in missing.json()["error"]
            assert missing.headers["www-authenticate"].startswith("Bearer")
            forged = client.post(
                url, json=rest_body(sensor_rows(1)), headers={"Authorization": "Bearer x"}
            )
            assert forged.status_code == 401, forged.text
            ok = client.post(
                url, json=rest_body(sensor_rows(1)), headers={"Authorization": f"Bearer {token}"}
            )
            assert ok.status_code == 200, ok.text
        with grpc.insecure_channel(status.endpoints.grpc) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                GRPCInferenceServiceStub(channel).ModelInfer(
                    grpc_request(sensor_rows(1)), timeout=30
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization" in str(refused.value.details())
        counts = usage(status)
        assert counts.get(("unknown", "client_error")) == 2, counts
        assert counts.get(("unauthenticated", "client_error")) == 1, counts
        assert counts.get((f"sa:{namespace}/historian", "ok")) == 1, counts
    finally:
        manager.close()
