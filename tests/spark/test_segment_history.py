"""gold.user_segments_history against what gold.user_segments said at each version (Delta time travel)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from delta.tables import DeltaTable

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.gold.history import members_at, update_segment_history
from spark_jobs.merge import replace_scopes
from tests.helpers import table

pytestmark = pytest.mark.spark

SEGMENTS, HISTORY = "gold.user_segments", "gold.user_segments_history"
T0 = datetime(2026, 11, 2, 10, 0)


def _write(spark, settings, persons: list[str], rows: list[tuple[str, str, float]]) -> int:
    """One gold batch: `persons` are rescored; `rows` (person, segment, score) is what they now are (a person
    in `persons` without a row is removed). Returns the new gold.user_segments version."""
    data = [
        {"person_id": p, "segment": s, "intent_score": score, "session_id": f"s-{p}-{score:g}", "last_seen_at": T0,
         "sessions": 1, "model_version": "weighted-v1"}
        for p, s, score in rows
    ]  # fmt: skip
    schema = table_contract(SEGMENTS).schema()
    replace_scopes(
        spark,
        settings,
        SEGMENTS,
        spark.createDataFrame(data, schema),
        ("person_id",),
        "person_id",
        spark.createDataFrame([(p,) for p in persons], "person_id STRING"),
    )
    return DeltaTable.forPath(spark, str(settings.table_path(SEGMENTS))).history(1).first().version


def _commit_times(spark, settings) -> dict[int, datetime]:
    history = DeltaTable.forPath(spark, str(settings.table_path(SEGMENTS))).history()
    return {r.version: r.timestamp for r in history.select("version", "timestamp").collect()}


def _members_from_history(spark, settings, at: datetime, segments: set[str]) -> set[tuple[str, str]]:
    return {(r.person_id, s) for s in segments for r in members_at(spark, settings, s, at).collect()}


def test_membership_as_of_any_time_matches_the_table_then_and_replays_change_nothing(spark, settings):
    ensure_tables(spark, settings, (SEGMENTS, HISTORY))
    v1 = _write(spark, settings, ["A", "B"], [("A", "Standard", 20.0), ("B", "Bounce Risk", 5.0)])
    update_segment_history(spark, settings)
    v2 = _write(spark, settings, ["A", "B"], [("A", "High Intent", 80.0), ("B", "Bounce Risk", 7.0)])
    # no history update after v2: as if that gold batch was killed before it got there
    v3 = _write(spark, settings, ["B", "C"], [("C", "High Intent", 90.0)])  # B removed (e.g. merged away)
    update_segment_history(spark, settings)
    history_version = DeltaTable.forPath(spark, str(settings.table_path(HISTORY))).history(1).first().version
    assert update_segment_history(spark, settings).as_details() == {"inserted": 0, "updated": 0, "deleted": 0}
    assert DeltaTable.forPath(spark, str(settings.table_path(HISTORY))).history(1).first().version == history_version
    v4 = _write(spark, settings, ["A"], [("A", "Standard", 30.0)])
    update_segment_history(spark, settings)
    _write(spark, settings, ["A"], [("A", "Standard", 35.0)])  # a new score only: read again each time, no spell
    history_version = DeltaTable.forPath(spark, str(settings.table_path(HISTORY))).history(1).first().version
    for _ in range(2):
        update_segment_history(spark, settings)
    assert DeltaTable.forPath(spark, str(settings.table_path(HISTORY))).history(1).first().version == history_version
    d1 = _write(spark, settings, ["D"], [("D", "Standard", 10.0)])
    update_segment_history(spark, settings)
    d2 = _write(spark, settings, ["D"], [])  # removed, then back in another segment, before the next update
    d3 = _write(spark, settings, ["D"], [("D", "Bounce Risk", 3.0)])
    update_segment_history(spark, settings)

    spells = {
        (r.person_id, r.segment, r.source_version, r.closed_version) for r in table(spark, settings, HISTORY).collect()
    }
    assert spells == {
        ("A", "Standard", v1, v2),
        ("A", "High Intent", v2, v4),
        ("A", "Standard", v4, None),
        ("B", "Bounce Risk", v1, v3),  # a new score in the same segment (v2) is not a new spell
        ("C", "High Intent", v3, None),
        ("D", "Standard", d1, d2),
        ("D", "Bounce Risk", d3, None),
    }
    times = _commit_times(spark, settings)
    names = {"Standard", "High Intent", "Bounce Risk"}
    for version in (v1, v2, v3, v4, v4 + 1, d1, d2, d3):
        then = spark.read.format("delta").option("versionAsOf", version).load(str(settings.table_path(SEGMENTS)))
        expected = {(r.person_id, r.segment) for r in then.collect()}
        for at in (
            times[version],
            times.get(version + 1, times[version] + timedelta(hours=1)) - timedelta(milliseconds=1),
        ):
            assert _members_from_history(spark, settings, at, names) == expected, (version, at)
    assert _members_from_history(spark, settings, times[v1] - timedelta(milliseconds=1), names) == set()
