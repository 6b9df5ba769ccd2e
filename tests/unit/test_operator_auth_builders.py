"""The Model's token Secret and how a Seldon Server reads it: no token value in any spec."""

from __future__ import annotations

import json

import pytest

from loopline import auth
from loopline.operators.builders.auth import (
    DIGEST_ENV,
    build_token_secret,
    digest_env,
    token_env,
    token_secret_name,
)
from loopline.serving.seldon import build_server


def test_token_secret_is_per_model_and_labelled() -> None:
    token = auth.new_token()
    secret = build_token_secret("plant", "drill-ae", token)
    assert secret["kind"] == "Secret"
    assert secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "drill-ae-loopline-token" == token_secret_name("drill-ae")
    assert secret["metadata"]["namespace"] == "plant"
    assert secret["metadata"]["labels"]["loopline.dev/model"] == "drill-ae"
    assert secret["stringData"] == {auth.SECRET_KEY: token}
    with pytest.raises(ValueError, match="at least 16"):
        build_token_secret("plant", "drill-ae", "short")
    with pytest.raises(ValueError, match="model is empty"):
        token_secret_name("")


def test_server_reads_the_token_from_the_secret_never_a_literal() -> None:
    token = auth.new_token()
    digest = auth.fingerprint(token)
    server = build_server(
        "drill-ae-server",
        "plant",
        image="loopline/runtime:test",
        env=digest_env(token),
        env_from_secrets=token_env("drill-ae"),
    )
    env = server["spec"]["podSpec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name[auth.TOKEN_ENV]["valueFrom"] == {
        "secretKeyRef": {"name": "drill-ae-loopline-token", "key": auth.SECRET_KEY}
    }
    assert by_name[DIGEST_ENV]["value"] == digest  # a rotated token changes the pod spec
    assert token not in json.dumps(server)


def test_a_literal_secret_value_is_refused() -> None:
    with pytest.raises(ValueError, match="needs valueFrom and no literal value"):
        build_server(
            "s",
            "plant",
            image="loopline/runtime:test",
            env_from_secrets=[{"name": auth.TOKEN_ENV, "value": auth.new_token()}],
        )
