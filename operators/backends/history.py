"""The Model's decision ledger in ModelHistory objects, and the approvals the operator reads.

Appending is one JSON patch of the newest chunk: a `test` of its resourceVersion (optimistic
concurrency: a second writer, or a chunk someone edited, makes the patch fail and the tail is
read again) and an `add` per entry at the end of `spec.entries`. The newest chunk's position
is cached per Model, so a reconcile that decides something costs one request and one that
decides nothing costs none. A full chunk starts the next (`<model>-history-<n+1>`); past
`max_chunks` the oldest are deleted, so a Model's ledger holds at most
`max_chunks * chunk_entries` decisions (500 * 20 = 10,000 by default; LOOPLINE_HISTORY_*).

Chunks have no owner reference: a deleted Model's history stays (its last entry says it was
deleted) until someone deletes it (`kubectl delete mh -l loopline.dev/model=<name>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from urllib3.exceptions import HTTPError

from loopline.operators.backends.kube_objects import api_error
from loopline.operators.builders.history import ApprovalObserved
from loopline.operators.errors import BackendUnavailable
from loopline.types.common import API_VERSION, GROUP, VERSION
from loopline.types.history import (
    CHUNK_ENTRIES,
    MODEL_LABEL,
    Decision,
    ModelApprovalSpec,
    ModelHistorySpec,
    chunk_name,
)

HISTORIES = "modelhistories"
APPROVALS = "modelapprovals"
CONFLICT = (409, 422)  # a failed `test` (the chunk changed) or a chunk created meanwhile


class HistorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPLINE_HISTORY_")

    # Small chunks keep an append cheap: the API server decodes, validates and stores the
    # whole chunk on every patch (200 entries cost ~3x the time of 50, which cost more than 20).
    chunk_entries: int = Field(default=20, ge=1, le=CHUNK_ENTRIES)
    max_chunks: int = Field(
        default=500, ge=1, description="Chunks kept per Model; older ones are deleted."
    )


@dataclass
class _Tail:
    index: int
    resource_version: str
    count: int
    uid: str = ""


def _parse_time(raw: str | None) -> datetime:
    return datetime.fromisoformat((raw or "1970-01-01T00:00:00Z").replace("Z", "+00:00"))


class HistoryLedger:
    """Append to and read the ledgers of the Models in the namespaces it is used for."""

    def __init__(self, api: k8s.ApiClient, settings: HistorySettings | None = None) -> None:
        self.api = api
        self.custom = k8s.CustomObjectsApi(api)
        self.settings = settings or HistorySettings()
        self._tails: dict[tuple[str, str], _Tail] = {}

    # -- writing ---------------------------------------------------------------------------

    def append(self, namespace: str, model: str, uid: str, decisions: Sequence[Decision]) -> None:
        """Add `decisions` at the end of the Model's ledger; BackendUnavailable when the API
        server cannot take them (the caller retries the reconcile that made them)."""
        if not decisions:
            return
        entries = [d.model_dump(mode="json", by_alias=True, exclude_none=True) for d in decisions]
        key = (namespace, model)
        for _ in range(4):
            tail = self._tails.get(key) or self._load_tail(namespace, model)
            try:
                # A Model deleted and made again under the same name starts a chunk of its own.
                same_model = tail is not None and tail.uid in ("", uid)
                room = tail is not None and tail.count + len(entries) <= self.settings.chunk_entries
                if tail is not None and same_model and room:
                    self._tails[key] = self._patch(namespace, model, tail, entries)
                else:
                    index = tail.index + 1 if tail is not None else 0
                    self._tails[key] = self._create(namespace, model, uid, index, entries)
                    self._prune(namespace, model, index)
                return
            except ApiException as exc:
                self._tails.pop(key, None)
                if exc.status not in CONFLICT:
                    raise api_error(f"record the history of {namespace}/{model}", exc) from exc
            except HTTPError as exc:
                self._tails.pop(key, None)
                raise BackendUnavailable(
                    f"cannot record the history of {namespace}/{model}: {exc}"
                ) from exc
        raise BackendUnavailable(
            f"cannot record the history of {namespace}/{model}: its ModelHistory kept changing "
            "under the operator (is a second operator running?)"
        )

    def _load_tail(self, namespace: str, model: str) -> _Tail | None:
        items = self._chunks(namespace, model)
        if not items:
            return None
        newest = max(items, key=lambda o: int(o["spec"].get("chunk", 0)))
        return _Tail(
            index=int(newest["spec"].get("chunk", 0)),
            resource_version=newest["metadata"]["resourceVersion"],
            count=len(newest["spec"].get("entries") or []),
            uid=str(newest["spec"].get("modelUid") or ""),
        )

    def _patch(
        self, namespace: str, model: str, tail: _Tail, entries: list[dict[str, Any]]
    ) -> _Tail:
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": tail.resource_version}
        ]
        ops += [{"op": "add", "path": "/spec/entries/-", "value": e} for e in entries]
        # The generated client sends every patch as a merge patch: call the path directly.
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{HISTORIES}/"
        done = self.api.call_api(
            path + chunk_name(model, tail.index),
            "PATCH",
            header_params={
                "Content-Type": "application/json-patch+json",
                "Accept": "application/json",
            },
            body=ops,
            response_type="object",
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )
        version = done["metadata"]["resourceVersion"]
        return _Tail(tail.index, version, tail.count + len(entries), tail.uid)

    def _create(
        self, namespace: str, model: str, uid: str, index: int, entries: list[dict[str, Any]]
    ) -> _Tail:
        spec = ModelHistorySpec(model=model, model_uid=uid, chunk=index)
        body = {
            "apiVersion": API_VERSION,
            "kind": "ModelHistory",
            "metadata": {"name": chunk_name(model, index), "labels": {MODEL_LABEL: model}},
            "spec": {**spec.model_dump(mode="json", by_alias=True), "entries": entries},
        }
        done = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, HISTORIES, body
        )
        return _Tail(index, done["metadata"]["resourceVersion"], len(entries), uid)

    def _prune(self, namespace: str, model: str, newest: int) -> None:
        """Delete the chunks that fell out of the window (best effort: the next new chunk
        tries again)."""
        oldest_kept = newest - self.settings.max_chunks + 1
        for item in self._chunks(namespace, model):
            if int(item["spec"].get("chunk", 0)) < oldest_kept:
                try:
                    self.custom.delete_namespaced_custom_object(
                        GROUP, VERSION, namespace, HISTORIES, item["metadata"]["name"]
                    )
                except ApiException as exc:
                    if exc.status != 404:
                        raise

    def _chunks(self, namespace: str, model: str) -> list[dict[str, Any]]:
        listing = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, HISTORIES, label_selector=f"{MODEL_LABEL}={model}"
        )
        return [i for i in listing.get("items", []) if (i.get("spec") or {}).get("model") == model]

    # -- reading ---------------------------------------------------------------------------

    def read(self, namespace: str, model: str) -> list[Decision]:
        """The Model's decisions, oldest first."""
        try:
            items = self._chunks(namespace, model)
        except ApiException as exc:
            raise api_error(f"read the history of {namespace}/{model}", exc) from exc
        decisions: list[Decision] = []
        for item in sorted(items, key=lambda o: int(o["spec"].get("chunk", 0))):
            try:
                decisions.extend(ModelHistorySpec.model_validate(item["spec"]).entries)
            except ValidationError as exc:
                raise BackendUnavailable(
                    f"ModelHistory {item['metadata']['name']} is not readable: {exc}"
                ) from exc
        return decisions

    def approvals(self, namespace: str, model: str) -> tuple[ApprovalObserved, ...]:
        """The ModelApprovals naming `model` in spec.model (a label is not required: one made
        with kubectl counts too; unreadable ones are skipped)."""
        try:
            listing = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, APPROVALS
            )
        except ApiException as exc:
            raise api_error(f"read the approvals of {namespace}/{model}", exc) from exc
        found = []
        for item in listing.get("items", []):
            try:
                spec = ModelApprovalSpec.model_validate(item.get("spec") or {})
            except ValidationError:
                continue
            if spec.model == model:
                meta = item["metadata"]
                found.append(
                    ApprovalObserved(meta["name"], spec, _parse_time(meta.get("creationTimestamp")))
                )
        return tuple(found)
