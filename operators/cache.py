"""The newest copy of each watched object, kept by the watch: a reconcile reads it, not a GET.

kopf already holds every Model and Pipeline body its watch delivered; a reconcile that GETs the
same object again (and its Pipeline) costs two round trips to an API server that, on a small
control plane, is the bottleneck when hundreds of Models change at once. This is client-go's
informer cache in its smallest form:

- the watch feeds it (`observe`), and a DELETED event drops the object;
- the operator's own status writes feed it too (`observe` with the patch's response), so the
  next reconcile reads its own write even before the watch brings it back (read-your-writes);
- an object it has never seen is not in it, and the caller GETs it: a cache that nobody feeds
  (the operator driven without kopf, in tests or by a one-off command) is a plain GET;
- a GET that found nothing is remembered (`remember_absent`) for a kind the watch feeds
  (`watched`), so a Model whose Pipeline does not exist yet is not one 404 per reconcile: the
  watch event that brings the object ends the absence, and it lapses after `absent_ttl`
  seconds in any case, in case a watch stream was broken and its relist not yet delivered.

Copies are never older than what they replace: resource versions are compared as the numbers
the API server's storage makes them (etcd revisions); one that is not a number replaces
whatever is held, the order of the watch being the only order there is then. A reconcile that
reads a copy a moment older than the server's is the same as a reconcile that ran a moment
earlier: the newer version's watch event queues the object again.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

Key = tuple[str, str, str]  # plural, namespace, name


def _newer(candidate: str | None, held: str | None) -> bool:
    if candidate is None or held is None:
        return candidate is not None or held is None
    try:
        return int(candidate) >= int(held)
    except ValueError:
        return True


ABSENT_TTL_S = 60.0


class ObjectCache:
    def __init__(self, absent_ttl: float = ABSENT_TTL_S) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._absent: dict[Key, float] = {}  # key -> monotonic time the GET found nothing
        self._absent_ttl = absent_ttl
        self._watched: set[str] = set()
        self._guard = threading.Lock()

    def watched(self, *plurals: str) -> None:
        """Say that a watch feeds every object of `plurals`: only then is a 404 remembered."""
        with self._guard:
            self._watched.update(plurals)

    def remember_absent(self, plural: str, namespace: str, name: str) -> None:
        """A GET found no such object; unless the watch brought it meanwhile, say so until the
        watch brings it or `absent_ttl` passes."""
        key = (plural, namespace, name)
        with self._guard:
            if plural in self._watched and key not in self._objects:
                self._absent[key] = time.monotonic()

    def absent(self, plural: str, namespace: str, name: str) -> bool:
        """Whether a recent GET found no such object and the watch has not brought it since."""
        key = (plural, namespace, name)
        with self._guard:
            since = self._absent.get(key)
            if since is None:
                return False
            if time.monotonic() - since > self._absent_ttl:
                del self._absent[key]
                return False
            return True

    def observe(self, plural: str, body: Any, deleted: bool = False) -> None:
        """Hold `body` as the newest copy of its object, unless a newer one is held."""
        self._store(plural, body, deleted=deleted, only_if_held=False)

    def update_if_held(self, plural: str, body: dict[str, Any]) -> None:
        """Take the operator's own write, but only for objects the watch feeds: an object the
        watch never delivered is always read fresh."""
        self._store(plural, body, deleted=False, only_if_held=True)

    def _store(self, plural: str, body: Any, *, deleted: bool, only_if_held: bool) -> None:
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if namespace is None or name is None:
            return
        key = (plural, namespace, name)
        version = meta.get("resourceVersion")
        with self._guard:
            if not deleted:
                self._absent.pop(key, None)
            held = self._objects.get(key)
            if held is None and only_if_held:
                return
            if held is not None and not _newer(version, held["metadata"].get("resourceVersion")):
                return
            if deleted:
                self._objects.pop(key, None)
            else:
                self._objects[key] = copy.deepcopy(dict(body))

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A private copy (the reconcile may change it), or None when not held."""
        with self._guard:
            held = self._objects.get((plural, namespace, name))
            return copy.deepcopy(held) if held is not None else None

    def held(self, plural: str) -> list[dict[str, Any]]:
        """Every object of `plural` held, not copied: for readers that only read (a metrics
        scrape); the cache never changes a held object, it replaces it."""
        with self._guard:
            return [body for (kind, _, _), body in self._objects.items() if kind == plural]

    def __len__(self) -> int:
        with self._guard:
            return len(self._objects)
