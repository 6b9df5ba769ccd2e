"""The operator's object cache: newest copy wins, deletions drop, own writes only for watched
objects, and callers get private copies."""

from __future__ import annotations

import threading
from typing import Any

from loopline.operators.cache import ObjectCache


def _body(name: str, rv: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "plant", "name": name, "resourceVersion": rv}, "spec": spec}


def test_an_unseen_object_is_not_held() -> None:
    assert ObjectCache().get("models", "plant", "a") is None


def test_the_newest_version_wins_whatever_the_arrival_order() -> None:
    cache = ObjectCache()
    cache.observe("models", _body("a", "10", epochs=1))
    cache.observe("models", _body("a", "12", epochs=3))
    cache.observe("models", _body("a", "11", epochs=2))  # a late event of an older version
    held = cache.get("models", "plant", "a")
    assert held is not None
    assert held["spec"] == {"epochs": 3}
    # resource versions compare as numbers, not strings ("9" < "10")
    cache.observe("models", _body("b", "9"))
    cache.observe("models", _body("b", "10", epochs=5))
    held = cache.get("models", "plant", "b")
    assert held is not None
    assert held["spec"] == {"epochs": 5}


def test_a_deletion_drops_the_object_but_not_a_newer_one() -> None:
    cache = ObjectCache()
    cache.observe("models", _body("a", "10"))
    cache.observe("models", _body("a", "10"), deleted=True)
    assert cache.get("models", "plant", "a") is None
    cache.observe("models", _body("c", "20"))  # recreated under the same name
    cache.observe("models", _body("c", "15"), deleted=True)  # the old one's late deletion
    assert cache.get("models", "plant", "c") is not None


def test_own_writes_are_taken_only_for_watched_objects() -> None:
    cache = ObjectCache()
    cache.update_if_held("models", _body("a", "5"))
    assert cache.get("models", "plant", "a") is None  # never watched: callers GET it
    cache.observe("models", _body("a", "5"))
    cache.update_if_held("models", {**_body("a", "6"), "status": {"phase": "Training"}})
    held = cache.get("models", "plant", "a")
    assert held is not None
    assert held["status"] == {"phase": "Training"}
    cache.observe("models", _body("a", "6"), deleted=True)
    cache.update_if_held("models", _body("a", "7"))  # a write answered after the deletion
    assert cache.get("models", "plant", "a") is None


def test_plurals_are_apart_and_copies_are_private() -> None:
    cache = ObjectCache()
    cache.observe("pipelines", _body("a", "1", schedule="@daily"))
    assert cache.get("models", "plant", "a") is None
    copy = cache.get("pipelines", "plant", "a")
    assert copy is not None
    copy["spec"]["schedule"] = "changed"
    again = cache.get("pipelines", "plant", "a")
    assert again is not None
    assert again["spec"]["schedule"] == "@daily"


def test_concurrent_writers_leave_the_highest_version() -> None:
    cache = ObjectCache()

    def feed(start: int) -> None:
        for rv in range(start, 2000, 4):
            cache.observe("models", _body("a", str(rv)))

    threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = cache.get("models", "plant", "a")
    assert held is not None
    assert held["metadata"]["resourceVersion"] == "1999"
    assert len(cache) == 1


def test_a_404_is_remembered_only_for_watched_kinds_until_the_watch_brings_the_object() -> None:
    cache = ObjectCache()
    cache.remember_absent("pipelines", "plant", "p")
    assert not cache.absent("pipelines", "plant", "p")  # no watch feeds it: always GET
    cache.watched("models", "pipelines")
    cache.remember_absent("pipelines", "plant", "p")
    assert cache.absent("pipelines", "plant", "p")
    assert not cache.absent("pipelines", "plant", "q")
    assert not cache.absent("models", "plant", "p")
    cache.observe("pipelines", _body("p", "3"))  # created: its watch event ends the absence
    assert not cache.absent("pipelines", "plant", "p")
    assert cache.get("pipelines", "plant", "p") is not None


def test_a_late_404_does_not_hide_an_object_the_watch_already_brought() -> None:
    cache = ObjectCache()
    cache.watched("pipelines")
    cache.observe("pipelines", _body("p", "3"))  # the watch was quicker than the GET's answer
    cache.remember_absent("pipelines", "plant", "p")
    assert not cache.absent("pipelines", "plant", "p")
    assert cache.get("pipelines", "plant", "p") is not None


def test_a_remembered_absence_lapses() -> None:
    cache = ObjectCache(absent_ttl=0.0)
    cache.watched("pipelines")
    cache.remember_absent("pipelines", "plant", "p")
    assert not cache.absent("pipelines", "plant", "p")  # lapsed: the caller GETs again
