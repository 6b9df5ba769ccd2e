"""Telling a repaired champion alias from the operator's own moves (pure builder)."""

from __future__ import annotations

from datetime import UTC, datetime

from loopline.operators.builders.champion import (
    ALIAS_RESTORED,
    HISTORY,
    ChampionCheck,
    alias_restoration,
    record,
)
from loopline.types.status import HistoryEntry, ModelStatus

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
NAME = "plant.drill-ae"


def test_an_alias_moved_away_from_the_standing_champion_is_a_restoration() -> None:
    restored = alias_restoration(ChampionCheck(NAME, "1", "2", moved=True), "1", NOW)
    assert restored is not None
    event, entry = restored
    assert (event.type, event.reason) == ("Warning", ALIAS_RESTORED)
    assert event.message.startswith("plant.drill-ae@champion pointed at version 2")
    assert "put back to version 1" in event.message
    assert (entry.reason, entry.found, entry.restored, entry.at) == (ALIAS_RESTORED, "2", "1", NOW)
    assert entry.message == event.message


def test_a_removed_alias_is_a_restoration_that_says_it_was_missing() -> None:
    restored = alias_restoration(ChampionCheck(NAME, "1", None, moved=True), "1", NOW)
    assert restored is not None
    assert "plant.drill-ae@champion was missing" in restored[0].message
    assert restored[1].found is None


def test_promotions_and_no_ops_are_not_restorations() -> None:
    # A promotion: the status named v1 before this reconcile, the plan names v2.
    assert alias_restoration(ChampionCheck(NAME, "2", "1", moved=True), "1", NOW) is None
    # The first champion: no status champion, no alias.
    assert alias_restoration(ChampionCheck(NAME, "1", None, moved=True), None, NOW) is None
    # Nothing moved.
    assert alias_restoration(ChampionCheck(NAME, "1", "1", moved=False), "1", NOW) is None


def test_history_is_newest_first_and_bounded() -> None:
    status = ModelStatus()
    for i in range(HISTORY + 3):
        status = record(status, HistoryEntry(at=NOW, reason=ALIAS_RESTORED, found=str(i)))
    assert len(status.history) == HISTORY
    assert status.history[0].found == str(HISTORY + 2)
