"""The token check and provisioning of `loopline.auth`: what every guarded endpoint relies on."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from loopline import auth
from loopline.auth import Verdict


def test_check_allows_only_the_bearer_token() -> None:
    token = auth.new_token()
    assert auth.check(f"Bearer {token}", token) is Verdict.ALLOWED
    assert auth.check(f"bearer   {token} ", token) is Verdict.ALLOWED  # scheme is case-free
    assert auth.check(None, token) is Verdict.MISSING
    assert auth.check("", token) is Verdict.MISSING
    assert auth.check("Bearer", token) is Verdict.MISSING
    assert auth.check(f"Basic {token}", token) is Verdict.MISSING  # not our scheme
    assert auth.check(f"Bearer {auth.new_token()}", token) is Verdict.FORBIDDEN
    assert auth.check(f"Bearer {token[:-1]}", token) is Verdict.FORBIDDEN
    assert auth.check(f"Bearer {token}x", token) is Verdict.FORBIDDEN
    assert Verdict.MISSING.value == 401
    assert Verdict.FORBIDDEN.value == 403


def test_check_with_auth_disabled_allows_anyone() -> None:
    assert auth.check(None, None) is Verdict.ALLOWED


def test_tokens_are_32_random_bytes() -> None:
    tokens = {auth.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 43 for t in tokens)  # 32 bytes, URL-safe base64 without padding


def test_bearer_headers() -> None:
    assert auth.bearer_headers("abc") == {"authorization": "Bearer abc"}
    assert auth.bearer_headers(None) == {}


def test_ensure_token_file_provisions_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "ns" / "m.token"
    token = auth.ensure_token_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.ensure_token_file(path) == token  # stable while the file exists
    assert [p.name for p in path.parent.iterdir()] == ["m.token"]  # no temporary left
    path.unlink()  # rotation
    assert auth.ensure_token_file(path) != token


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    auth.ensure_token_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(auth.AuthConfigError, match="mode 0644 lets other users read"):
        auth.read_token_file(path)


def test_load_token_from_file_or_env(tmp_path: Path) -> None:
    path = tmp_path / "token"
    token = auth.ensure_token_file(path)
    assert auth.load_token({auth.TOKEN_FILE_ENV: str(path)}) == token
    other = auth.new_token()
    assert auth.load_token({auth.TOKEN_ENV: other}) == other
    with pytest.raises(auth.AuthConfigError, match="at least 16 printable"):
        auth.load_token({auth.TOKEN_ENV: "short"})
    with pytest.raises(auth.AuthConfigError, match="cannot read the token"):
        auth.load_token({auth.TOKEN_FILE_ENV: str(tmp_path / "missing")})


def test_no_token_refuses_to_start_unless_disabled_which_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(auth.AuthConfigError, match="LOOPLINE_AUTH_TOKEN_FILE"):
        auth.load_token({}, what="the monitor")
    assert not auth.auth_disabled({})
    with caplog.at_level(logging.WARNING, logger="loopline.auth"):
        assert auth.load_token({auth.DISABLED_ENV: "true"}, what="the monitor") is None
    assert "accepts state-changing requests from anyone" in caplog.text


def test_client_token_is_none_when_unset() -> None:
    assert auth.client_token({}) is None
    token = auth.new_token()
    assert auth.client_token({auth.TOKEN_ENV: token}) == token


def test_fingerprint_differs_per_token_and_hides_it() -> None:
    token = auth.new_token()
    digest = auth.fingerprint(token)
    assert digest == auth.fingerprint(token) != auth.fingerprint(auth.new_token())
    assert token not in digest


def test_model_token_path_is_per_model(tmp_path: Path) -> None:
    assert auth.model_token_path(tmp_path, "ns", "m") == tmp_path / "ns" / "m.token"
