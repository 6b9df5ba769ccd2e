"""A Model's decisions, appended to ConfigMaps in its namespace (the history ledger).

Why ConfigMaps: they live in etcd next to the Model, so they outlive Kubernetes Events (an
hour) and operator restarts, and a cluster backup (etcd snapshot, Velero) takes them with the
Model; they need no server beyond the API server. Why not the Model's status: status is
rebuilt when unreadable, and its size is bounded by the object's.

Layout: chunks named `<model>-history-<NNNNN>`, labelled `loopline.dev/history-of: <model>`,
each holding up to `chunk_size` decisions as data keys `<at, ns since epoch>-<digest>` (so a
chunk's keys sort by time and two writers never write the same key). An append is one API
call: a merge patch adding keys, or, for a Model's first decisions, the creation of its chunk
with them in it. A full chunk is sealed (`immutable: true`, so the API server refuses any
change to it) and the next one created with the append's keys; beyond `chunks` chunks the
oldest is deleted (bounded growth: `chunks * chunk_size` decisions are kept). The ledger
carries no owner reference: it outlives the Model's deletion, which it records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from loopline.types.history import Decision

LABEL = "loopline.dev/history-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
CHUNK_SIZE = 100
CHUNKS = 200
_CHUNK = re.compile(r"-history-(\d{5})$")

log = logging.getLogger(__name__)


def label_value(model: str) -> str:
    """The label value naming `model` (a label value is at most 63 characters)."""
    if len(model) <= 63:
        return model
    return f"{model[:50]}-{hashlib.sha256(model.encode()).hexdigest()[:12]}"


def chunk_name(model: str, index: int) -> str:
    return f"{model[:230]}-history-{index:05d}"


def decision_ns(decision: Decision) -> int:
    return int(decision.at.timestamp() * 1_000_000) * 1000


def decision_key(ns: int, text: str) -> str:
    """The data key of a decision: its time in ns (zero-padded, so keys sort by time) and a
    digest of its text (so two writers never write the same key)."""
    return f"{ns:020d}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@dataclass
class _Tail:
    index: int
    count: int


class Ledger:
    """Appends and reads the decisions of Models through one Kubernetes client."""

    def __init__(
        self, core: k8s.CoreV1Api, chunk_size: int = CHUNK_SIZE, chunks: int = CHUNKS
    ) -> None:
        if chunk_size < 1 or chunks < 1:
            raise ValueError("history ledger: chunk_size and chunks must be at least 1")
        self.core = core
        self.chunk_size = chunk_size
        self.chunks = chunks
        self._tails: dict[tuple[str, str], _Tail] = {}
        # Where a Model's next chunk starts when all of its chunks are sealed.
        self._next: dict[tuple[str, str], int] = {}
        # Namespaces whose ledgers were listed once: a Model of theirs without a tail has none.
        self._listed: set[str] = set()
        self._listing = threading.Lock()
        self._last: dict[tuple[str, str], int] = {}
        self._guard = threading.Lock()  # guards _locks; each Model's lock guards the rest
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    # -- write ----------------------------------------------------------------------------

    def append(self, namespace: str, model: str, decisions: Iterable[Decision]) -> None:
        """Add `decisions` to the Model's ledger (one API call when the open chunk has room).
        Raises ApiException when the API server refuses it twice."""
        with self._guard:
            lock = self._locks.setdefault((namespace, model), threading.Lock())
        with lock:  # Models' ledgers are written in parallel, each by one thread at a time
            # Decisions made in the same instant keep the order they were made in: a writer's
            # keys strictly increase (by a nanosecond where two times are equal).
            entries = {}
            last = self._last.get((namespace, model), 0)
            for decision in decisions:
                text = decision.to_json()
                last = max(decision_ns(decision), last + 1)
                entries[decision_key(last, text)] = text
            if not entries:
                return
            self._last[(namespace, model)] = last
            for attempt in range(2):
                try:
                    self._write(namespace, model, entries)
                except ApiException as exc:
                    # Deleted, sealed or opened by another writer: read the chunks again, once.
                    self._tails.pop((namespace, model), None)
                    with self._listing:
                        self._listed.discard(namespace)
                    if exc.status not in (404, 409, 422) or attempt:
                        raise
                    continue
                return

    def _write(self, namespace: str, model: str, entries: dict[str, str]) -> None:
        """One API call: a patch of the open chunk, or the creation of the next chunk with
        `entries` in it when there is none or it is full (sealing the full one first)."""
        key = (namespace, model)
        tail = self._tail(namespace, model)
        if tail is not None and tail.count + len(entries) > self.chunk_size and tail.count > 0:
            self._seal(namespace, model, tail)
            tail = None
        if tail is None:
            index = self._next.pop(key, 0)
            self._create(namespace, model, index, entries)
            self._tails[key] = _Tail(index, len(entries))
            if index > 0:
                self._prune(namespace, model)
            return
        # The answer is the whole chunk: not parsed into a V1ConfigMap (it would cost more
        # than the patch itself).
        response = self.core.patch_namespaced_config_map(
            chunk_name(model, tail.index), namespace, {"data": entries}, _preload_content=False
        )
        response.read()  # drained, so the connection is reused
        response.release_conn()
        tail.count += len(entries)

    def _tail(self, namespace: str, model: str) -> _Tail | None:
        """The Model's open chunk, or None when it has none (its next index in `_next`)."""
        key = (namespace, model)
        if key not in self._tails:
            self._list_namespace(namespace)
        return self._tails.get(key)

    def _list_namespace(self, namespace: str) -> None:
        """Find every Model's open chunk in `namespace` with one list, the first time a Model
        of it is written: a list of ConfigMaps by label reads all of the namespace's on the
        API server, so one per Model made the first write of N Models cost O(N) each."""
        with self._listing:
            if namespace in self._listed:
                return
            listing = self.core.list_namespaced_config_map(namespace, label_selector=LABEL)
            chunks: dict[str, list[k8s.V1ConfigMap]] = {}
            for chunk in listing.items:
                meta = chunk.metadata
                if not _CHUNK.search(meta.name):
                    continue
                model = (meta.annotations or {}).get("loopline.dev/model") or (
                    (meta.labels or {}).get(LABEL, "")
                )
                chunks.setdefault(model, []).append(chunk)
            for model, found in chunks.items():
                key = (namespace, model)
                if key in self._tails:
                    continue
                found.sort(key=_index)
                open_ = [c for c in found if not c.immutable]
                if open_:
                    self._tails[key] = _Tail(_index(open_[-1]), len(open_[-1].data or {}))
                else:
                    self._next[key] = _index(found[-1]) + 1
            self._listed.add(namespace)

    def _seal(self, namespace: str, model: str, tail: _Tail) -> None:
        """Make the full chunk immutable; the next write opens the one after it."""
        try:
            self.core.patch_namespaced_config_map(
                chunk_name(model, tail.index), namespace, {"immutable": True}
            )
        except ApiException as exc:
            if exc.status not in (404, 422):
                raise
        self._tails.pop((namespace, model), None)
        self._next[(namespace, model)] = tail.index + 1

    def _prune(self, namespace: str, model: str) -> None:
        """Drop the oldest chunks beyond the retention (after the write: a failure here loses
        no decision, and the next roll prunes again)."""
        try:
            for old in self._chunks(namespace, model)[: -self.chunks]:
                try:
                    self.core.delete_namespaced_config_map(old.metadata.name, namespace)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
        except ApiException as exc:
            log.warning("history of %s/%s: old chunks not pruned: %s", namespace, model, exc)

    def _create(self, namespace: str, model: str, index: int, entries: dict[str, str]) -> None:
        """Open chunk `index` holding `entries`; 409 when another writer opened it first."""
        body = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(
                name=chunk_name(model, index),
                labels={LABEL: label_value(model), COMPONENT_LABEL: "history"},
                annotations={"loopline.dev/model": model},
            ),
            data=entries,
        )
        response = self.core.create_namespaced_config_map(namespace, body, _preload_content=False)
        response.read()
        response.release_conn()

    def _chunks(self, namespace: str, model: str) -> list[k8s.V1ConfigMap]:
        listing = self.core.list_namespaced_config_map(
            namespace, label_selector=f"{LABEL}={label_value(model)}"
        )
        mine = [
            c
            for c in listing.items
            if (c.metadata.annotations or {}).get("loopline.dev/model", model) == model
            and _CHUNK.search(c.metadata.name)
        ]
        return sorted(mine, key=_index)

    # -- read -----------------------------------------------------------------------------

    def read(self, namespace: str, model: str) -> list[Decision]:
        """Every kept decision of the Model, oldest first."""
        entries: dict[str, str] = {}
        for chunk in self._chunks(namespace, model):
            entries.update(chunk.data or {})
        return parse_entries(entries)


def parse_entries(entries: dict[str, str]) -> list[Decision]:
    """Decisions from ledger data keys and values, oldest first (unreadable ones skipped:
    a hand-edited entry must not hide the rest)."""
    decisions = []
    for key in sorted(entries):
        try:
            decisions.append(Decision.model_validate(json.loads(entries[key])))
        except ValueError:
            continue
    return decisions


def _index(chunk: k8s.V1ConfigMap) -> int:
    found = _CHUNK.search(chunk.metadata.name)
    return int(found.group(1)) if found else -1
