"""The registry's `champion` alias is the operator's: moved by anyone else, it is put back at
the next reconcile, with a Warning Event and a status history entry saying where it pointed.

The hostile move is made the way anyone on the network could make it: MlflowClient against
the same tracking store (SQLite here), to a version the gate never let serve. The operator is
the real one (kopf, real control plane, local pipeline backend with the test worker); the
Model has `serving.replicas: 0`, so no model server is needed for the made-up versions.
"""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from loopline.operators.builders.champion import ALIAS_RESTORED
from loopline.tracking.registry import CHAMPION, version_by_alias
from loopline.wait import wait_for
from tests.fixtures.operator import PIPELINE, RECONCILE_INTERVAL, OperatorHarness, model_manifest

pytestmark = pytest.mark.security

# One reconcile interval, plus what a busy two-core machine needs for a reconcile to run
# (kopf timer jitter, one MLflow SQLite round trip, a status patch).
RESTORE_WITHIN = float(RECONCILE_INTERVAL) + 5.0


def test_a_champion_alias_moved_by_hand_is_put_back_within_one_reconcile(
    operator_harness: OperatorHarness,
) -> None:
    h = operator_harness
    tracking = h.env["LOOPLINE_MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    registered = f"{h.namespace}.drill-ae"

    def champion() -> str | None:
        found = version_by_alias(client, registered, CHAMPION)
        return None if found is None else str(found.version)

    h.create(PIPELINE)
    h.create(model_manifest())
    with h.running():
        status = h.wait_phase("drill-ae", "Serving", timeout=90)
        assert status["champion"]["version"] == "1"
        wait_for(lambda: champion() == "1", timeout=RESTORE_WITHIN, what="champion -> v1")
        # A version that never passed the operator's rollout, then the alias moved onto it.
        rejected = str(client.create_model_version(registered, source="file:///dev/null").version)
        assert rejected == "2"
        client.set_registered_model_alias(registered, CHAMPION, rejected)
        moved_at = time.monotonic()
        assert champion() == "2"
        wait_for(
            lambda: champion() == "1",
            timeout=RESTORE_WITHIN,
            what=f"{registered}@champion put back to version 1 (now: {champion()})",
            interval=0.05,
        )
        took = time.monotonic() - moved_at
        entry = wait_for(
            lambda: next(
                (
                    e
                    for e in h.status("drill-ae").get("history", [])
                    if e["reason"] == ALIAS_RESTORED
                ),
                None,
            ),
            timeout=RESTORE_WITHIN,
            what="a ChampionAliasRestored history entry",
        )
        assert entry["found"] == "2"
        assert entry["restored"] == "1"
        assert "pointed at version 2" in entry["message"]
        assert "put back to version 1" in entry["message"]
        events = wait_for(
            lambda: [m for r, m in h.events("drill-ae") if r == ALIAS_RESTORED],
            timeout=RESTORE_WITHIN,
            what="a ChampionAliasRestored Event",
        )
        assert f"{registered}@champion pointed at version 2" in events[0]
        # Removing the alias is a move too.
        client.delete_registered_model_alias(registered, CHAMPION)
        wait_for(
            lambda: champion() == "1",
            timeout=RESTORE_WITHIN,
            what=f"{registered}@champion recreated at version 1 (now: {champion()})",
        )
        history = wait_for(
            lambda: (
                [
                    e
                    for e in h.status("drill-ae").get("history", [])
                    if e["reason"] == ALIAS_RESTORED
                ][1:]
                and h.status("drill-ae")["history"]
            ),
            timeout=RESTORE_WITHIN,
            what="a second ChampionAliasRestored history entry",
        )
        assert history[0].get("found") is None
        assert "was missing" in history[0]["message"]
        # The Model kept serving its champion throughout; nothing else was touched.
        assert h.status("drill-ae")["champion"]["version"] == "1"
        assert h.status("drill-ae")["phase"] == "Serving"
    # (printed here: kopf's runner captures stdout while it runs)
    print(f"alias moved -> put back in {took:.2f} s (reconcile interval {RECONCILE_INTERVAL} s)")
    # Only one run: restoring the alias is not a reason to train.
    assert len(h.started()) == 1
