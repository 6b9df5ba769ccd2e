"""The pure parts of asynchronous inference: ids, stream entries, stored results, routes,
settings and the local Redis configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from loopline.serving.async_messages import (
    AsyncMessageError,
    AsyncRequest,
    AsyncRoute,
    StoredResult,
    StreamKeys,
    accepted_body,
    async_route,
    check_id,
    decode_request,
    error_result,
    id_age_seconds,
    new_id,
    result_location,
)
from loopline.serving.async_redis_local import redis_config
from loopline.serving.async_settings import AsyncSettings


@pytest.mark.parametrize("good", ["a", "req-1", "plant7:line2:0001", "A.b_c-d", "x" * 128])
def test_ids_that_fit_a_key_and_a_path_are_kept(good: str) -> None:
    assert check_id(good) == good


@pytest.mark.parametrize("bad", ["", "-leading", "has space", "slash/inside", "x" * 129, 7, None])
def test_other_ids_are_refused_naming_the_field(bad: object) -> None:
    with pytest.raises(AsyncMessageError, match=r"^id must be 1-128 characters"):
        check_id(bad)
    with pytest.raises(AsyncMessageError, match=r"^request id in the path must be"):
        check_id(bad, "request id in the path")


def test_new_ids_are_valid_and_distinct() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(check_id(i) for i in ids)


def test_keys_of_one_model_share_its_prefix() -> None:
    keys = StreamKeys("loopline:async", "drill-ae")
    assert keys.requests == "loopline:async:drill-ae:requests"
    assert keys.group == "loopline:async:drill-ae:workers"
    assert keys.results == "loopline:async:drill-ae:results"
    assert keys.result("r1") == "loopline:async:drill-ae:result:r1"
    assert keys.accepted("r1") == "loopline:async:drill-ae:accepted:r1"


def test_a_request_round_trips_through_stream_fields() -> None:
    request = AsyncRequest("r-1", b'{"inputs": []}', "historian")
    fields = request.fields()
    assert fields == {"id": b"r-1", "body": b'{"inputs": []}', "caller": b"historian"}
    # XREADGROUP hands back bytes keys.
    assert decode_request({k.encode(): v for k, v in fields.items()}) == request


def test_the_verified_subject_travels_with_the_request() -> None:
    subject = "system:serviceaccount:plant:historian"
    request = AsyncRequest("r-3", b"{}", "mes", subject)
    fields = request.fields()
    assert fields["subject"] == subject.encode()
    assert decode_request({k.encode(): v for k, v in fields.items()}) == request
    assert "subject" not in AsyncRequest("r-4", b"{}", "mes").fields()


def test_a_request_without_caller_has_no_caller_field() -> None:
    fields = AsyncRequest("r-2", b"{}").fields()
    assert "caller" not in fields
    assert decode_request(fields).caller is None


def test_string_fields_from_a_producer_are_read_too() -> None:
    request = decode_request({"id": "r-3", "body": '{"inputs": []}'})
    assert request.body == b'{"inputs": []}'


def test_an_entry_without_id_or_body_names_the_field() -> None:
    with pytest.raises(AsyncMessageError, match="stream field 'id' must be"):
        decode_request({b"body": b"{}"})
    with pytest.raises(AsyncMessageError, match="stream field 'body' is missing in request 'r-4'"):
        decode_request({b"id": b"r-4"})
    with pytest.raises(AsyncMessageError, match="stream field 'body'"):
        decode_request({b"id": b"r-4", b"body": b""})


def test_stored_results_round_trip_and_keep_the_sync_status() -> None:
    ok = StoredResult(200, b'{"model_name": "m", "outputs": []}')
    assert StoredResult.decode(ok.encode()) == ok
    failed = error_result(422, "input 'features' has 2 columns, expected 8")
    assert failed.status == 422
    assert json.loads(failed.body) == {"error": "input 'features' has 2 columns, expected 8"}
    assert StoredResult.decode(failed.encode()) == failed


def test_the_accepted_body_points_at_the_result() -> None:
    location = result_location("drill-ae", "r-5")
    assert location == "/v2/models/drill-ae/infer/async/r-5"
    doc = json.loads(accepted_body("drill-ae", "r-5", location))
    assert doc == {"id": "r-5", "model_name": "drill-ae", "status": "pending", "location": location}


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/v2/models/m/infer/async", AsyncRoute("m", None)),
        ("/v2/models/m/infer/async/", AsyncRoute("m", None)),
        ("/v2/models/m/versions/3/infer/async", AsyncRoute("m", None)),
        ("/v2/models/m/infer/async/r-1", AsyncRoute("m", "r-1")),
        ("/v2/models/m/versions/3/infer/async/r-1", AsyncRoute("m", "r-1")),
        ("/v2/models/m/infer", None),
        ("/v2/models/m/infer/other", None),
        ("/v2/models/m/infer/async/r-1/more", None),
        ("/v2/models//infer/async", None),
        ("/v1/models/m/infer/async", None),
    ],
)
def test_async_routes(path: str, route: AsyncRoute | None) -> None:
    assert async_route(path) == route


def test_a_poll_with_an_unusable_id_is_refused() -> None:
    with pytest.raises(AsyncMessageError, match="request id in the path"):
        async_route("/v2/models/m/infer/async/-x")


def test_the_age_of_an_entry_comes_from_its_id() -> None:
    assert id_age_seconds(b"1000000-0", 1010.5) == pytest.approx(10.5)
    assert id_age_seconds("1000000-3", 1000.0) == 0.0
    assert id_age_seconds("2000000-0", 1000.0) == 0.0  # clock skew: never negative


def test_settings_are_off_without_a_url_and_checked() -> None:
    assert not AsyncSettings().enabled
    settings = AsyncSettings(redis_url="redis://127.0.0.1:1/0", consumer="w1")
    assert settings.enabled
    assert settings.consumer_name() == "w1"
    assert AsyncSettings().consumer_name()
    with pytest.raises(ValidationError, match="claim_idle_s"):
        AsyncSettings(claim_idle_s=0)
    with pytest.raises(ValidationError, match="unknown"):
        AsyncSettings(unknown=1)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPLINE_ASYNC_REDIS_URL", "redis://r:6379/1")
    monkeypatch.setenv("LOOPLINE_ASYNC_RESULT_STREAM", "true")
    settings = AsyncSettings()
    assert settings.redis_url == "redis://r:6379/1"
    assert settings.result_stream


def test_local_redis_listens_on_loopback_and_keeps_its_title(tmp_path: Path) -> None:
    conf = redis_config(tmp_path, 6390).splitlines()
    assert "bind 127.0.0.1" in conf
    assert "port 6390" in conf
    assert f'dir "{tmp_path}"' in conf
    assert "appendonly yes" in conf
    assert "set-proc-title no" in conf  # command line and environment stay as started
