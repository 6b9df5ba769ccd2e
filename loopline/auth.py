"""Per-Model bearer tokens for the endpoints that change state.

A model server's repository API (load, unload, index) and a drift monitor's sample and
control API are reachable by anything that can reach their ports; without a check, any
process on the host (or, in a cluster, any pod) could unload a model or feed a monitor forged
rows until it confirms drift and starts a retraining. So each Model gets one random token
the operator provisions, and only its callers hold it: the operator (hot reload, monitor
control) and the Model's own model server (payload samples to its monitor).

Processes receive the token through the environment, never on their command line (`ps`
shows argv to every user): `LOOPLINE_AUTH_TOKEN_FILE` names a 0600 file (local mode), or
`LOOPLINE_AUTH_TOKEN` holds it (a Kubernetes Secret referenced by `secretKeyRef`).
`LOOPLINE_AUTH_DISABLED=true` turns the check off for development; it is off by default and
a server that runs with it logs a warning.

This module is core: it imports nothing from serving, monitoring or the operators, so all
three can share it.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import hmac
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_ENV = "LOOPLINE_AUTH_TOKEN"
TOKEN_FILE_ENV = "LOOPLINE_AUTH_TOKEN_FILE"
DISABLED_ENV = "LOOPLINE_AUTH_DISABLED"
TOKEN_FILE = "auth-token"  # the file's name in a Model's local state folder
SECRET_KEY = "token"  # the key in a Model's Secret
TOKEN_BYTES = 32
SCHEME = "Bearer"
CHALLENGE = f'{SCHEME} realm="loopline"'


class AuthConfigError(RuntimeError):
    """No usable token was configured; the message says which variable or file to fix."""


class Verdict(enum.Enum):
    """The outcome of checking one request's credentials."""

    ALLOWED = 200
    MISSING = 401  # no credentials: the client should authenticate
    FORBIDDEN = 403  # credentials that are not this Model's token


def new_token() -> str:
    """A fresh token: 32 random bytes, URL-safe base64 (header- and file-safe)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def fingerprint(token: str) -> str:
    """A digest that tells tokens apart without revealing them (for identity files)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def model_token_path(tokens_dir: Path, namespace: str, name: str) -> Path:
    """Where the operator keeps one Model's token in local mode; the model server and the
    drift monitor of the Model read the same file, so one token serves both."""
    return tokens_dir / namespace / f"{name}.token"


def _valid(token: str, where: str) -> str:
    token = token.strip()
    if len(token) < 16 or any(c.isspace() or not c.isprintable() for c in token):
        raise AuthConfigError(
            f"{where}: the token must be at least 16 printable characters without spaces"
        )
    return token


def read_token_file(path: Path) -> str:
    """The token in `path`; refuses a file other users can read (they would hold the key)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise AuthConfigError(f"{TOKEN_FILE_ENV}={path}: cannot read the token: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthConfigError(
            f"{TOKEN_FILE_ENV}={path}: mode {stat.S_IMODE(mode):04o} lets other users read the "
            "token; make it 0600 (chmod 600) or delete it so a new one is provisioned"
        )
    return _valid(text, f"{TOKEN_FILE_ENV}={path}")


def ensure_token_file(path: Path) -> str:
    """The token in `path`, provisioning a new one (mode 0600, created atomically so no
    other user ever sees it readable) when the file does not exist. Deleting the file is
    how a token is rotated: the next provisioning writes a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        token = new_token()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")
            os.link(tmp, path)  # fails if another provisioner won the race: keep theirs
        except FileExistsError:
            pass
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return read_token_file(path)


def auth_disabled(env: Mapping[str, str] | None = None) -> bool:
    value = (os.environ if env is None else env).get(DISABLED_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def load_token(env: Mapping[str, str] | None = None, *, what: str = "this server") -> str | None:
    """The token a server checks callers against, from its environment.

    None only when `LOOPLINE_AUTH_DISABLED` is on (and a warning is logged); a server with
    neither a token nor that switch refuses to start rather than run open."""
    env = os.environ if env is None else env
    path = env.get(TOKEN_FILE_ENV, "")
    if path:
        return read_token_file(Path(path))
    if env.get(TOKEN_ENV, ""):
        return _valid(env[TOKEN_ENV], TOKEN_ENV)
    if auth_disabled(env):
        log.warning(
            "%s=true: %s accepts state-changing requests from anyone who can reach it "
            "(development only)",
            DISABLED_ENV,
            what,
        )
        return None
    raise AuthConfigError(
        f"{what} has no token: set {TOKEN_FILE_ENV} (a 0600 file) or {TOKEN_ENV} (e.g. from "
        f"the Model's Secret); {DISABLED_ENV}=true runs without authentication (development)"
    )


def client_token(env: Mapping[str, str] | None = None) -> str | None:
    """The token a caller sends (the model server's sampler): like `load_token`, but a
    missing one is None instead of an error, since the receiving side decides."""
    env = os.environ if env is None else env
    try:
        if env.get(TOKEN_FILE_ENV, ""):
            return read_token_file(Path(env[TOKEN_FILE_ENV]))
        if env.get(TOKEN_ENV, ""):
            return _valid(env[TOKEN_ENV], TOKEN_ENV)
    except AuthConfigError as exc:
        log.warning("no token to send: %s", exc)
    return None


def check(authorization: str | None, token: str | None) -> Verdict:
    """Whether an `Authorization` header value carries `token` (None: auth disabled).

    The comparison is `hmac.compare_digest`, whose time does not depend on where the
    strings first differ, so the token cannot be guessed a character at a time."""
    if token is None:
        return Verdict.ALLOWED
    if not authorization:
        return Verdict.MISSING
    scheme, _, presented = authorization.strip().partition(" ")
    if scheme.lower() != SCHEME.lower() or not presented.strip():
        return Verdict.MISSING
    if hmac.compare_digest(presented.strip().encode(), token.encode()):
        return Verdict.ALLOWED
    return Verdict.FORBIDDEN


def denial_message(verdict: Verdict) -> str:
    if verdict is Verdict.MISSING:
        return "authentication required: send 'Authorization: Bearer <the Model's token>'"
    return "the bearer token is not this Model's token"


def bearer_headers(token: str | None) -> dict[str, str]:
    """Headers that authenticate a call (none when there is no token to send)."""
    return {"authorization": f"{SCHEME} {token}"} if token else {}
