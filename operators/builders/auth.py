"""A Model's token Secret on a cluster: pure builders (`loopline.auth` explains the token).

In cluster mode the operator keeps one Secret per Model, `<model>-loopline-token`, whose
`token` key the Model's model server pods and drift monitor read through `secretKeyRef`
(an env value from a Secret is never in the pod spec, the command line or the operator's
logs). The operator creates it once and never overwrites it; deleting it rotates the token:
the next reconcile creates a new one, and the digest of the token in the server's pod spec
changes, which rolls the pods onto it.
"""

from __future__ import annotations

from typing import Any

from loopline import auth

MANAGED_BY = {"app.kubernetes.io/managed-by": "loopline"}
MODEL_LABEL = "loopline.dev/model"
SUFFIX = "-loopline-token"
DIGEST_ENV = "LOOPLINE_AUTH_TOKEN_SHA256"


def token_secret_name(model: str) -> str:
    """The Secret of `model`'s token (a DNS-1123 subdomain: Model names are DNS labels)."""
    if not model:
        raise ValueError("model is empty: the Model whose token Secret this is")
    return f"{model}{SUFFIX}"


def build_token_secret(
    namespace: str, model: str, token: str, *, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The v1 Secret holding `token` for `model` (stringData: the API server encodes it)."""
    if len(token) < 16:
        raise ValueError("token: at least 16 characters (use loopline.auth.new_token())")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": token_secret_name(model),
            "namespace": namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: model, **(labels or {})},
        },
        "type": "Opaque",
        "stringData": {auth.SECRET_KEY: token},
    }


def token_env(model: str) -> list[dict[str, Any]]:
    """Container env that hands the pod the Model's token: `LOOPLINE_AUTH_TOKEN` from the
    Secret, by reference."""
    return [
        {
            "name": auth.TOKEN_ENV,
            "valueFrom": {
                "secretKeyRef": {"name": token_secret_name(model), "key": auth.SECRET_KEY}
            },
        }
    ]


def digest_env(token: str) -> dict[str, str]:
    """The token's digest as a plain variable: a rotated token changes the pod spec, so the
    pods restart onto it (a Secret's env value is only read when a container starts)."""
    return {DIGEST_ENV: auth.fingerprint(token)}
