"""The online store (spark_jobs/serving/online_store.py) on a real Redis and real Delta tables: it follows the
tables' Change Data Feed, an older batch replayed never overwrites a newer value, identity merges move ids to
their new person, a Redis that lost its data is rebuilt from the tables, and erasure removes the person.

The source tables are written here with the contracts' schemas and Delta MERGE/DELETE, as gold and silver
write them, so each change is a real commit in the feed (tests/integration/test_dags.py runs the store
after a real pipeline, in the audience_inputs DAG).
"""

from __future__ import annotations

from datetime import date, datetime

import pytest
from delta.tables import DeltaTable

from spark_jobs.contracts import ensure_tables, table_contract, table_version
from spark_jobs.serving import online_store as store

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 12, 0)
TABLE_KEYS = {
    "gold.user_segments": ("person_id",),
    "gold.session_scores": ("session_id",),
    "gold.send_times": ("person_id",),
    "gold.content_assignments": ("person_id", "channel"),
    "silver.profiles": ("person_id",),
    "silver.identity_map": ("identifier_type", "identifier"),
}


def _upsert(spark, settings, name: str, rows: list[dict]) -> None:
    """MERGE rows (every column of the contract) into a table on its key, as the jobs do."""
    schema = table_contract(name).schema()
    frame = spark.createDataFrame([tuple(r.get(f.name) for f in schema.fields) for r in rows], schema)
    on = " AND ".join(f"t.{k} = s.{k}" for k in TABLE_KEYS[name])
    (DeltaTable.forPath(spark, str(settings.table_path(name))).alias("t").merge(frame.alias("s"), on)
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())  # fmt: skip


def _segment(person: str, segment: str, score: float, session: str, seen: datetime = T0) -> dict:
    return {"person_id": person, "segment": segment, "intent_score": score, "session_id": session,
            "last_seen_at": seen, "sessions": 2, "model_version": "weighted-v1"}  # fmt: skip


def _score(person: str, session: str, score: float, contributions: dict) -> dict:
    return {"session_id": session, "person_id": person, "session_start": T0, "session_end": T0, "is_closed": True,
            "intent_score": score, "contributions": contributions, "model_version": "weighted-v1",
            "segment": "x", "session_date": date(2026, 11, 2)}  # fmt: skip


def _identity(kind: str, identifier: str, person: str) -> dict:
    return {"identifier_type": kind, "identifier": identifier, "person_id": person, "method": "self",
            "confidence": 1.0, "first_seen": T0, "last_seen": T0, "linked_by": ""}  # fmt: skip


def _lakehouse(spark, settings) -> None:
    ensure_tables(spark, settings)
    _upsert(spark, settings, "gold.session_scores", [
        _score("p-a", "s-a1", 81.5, {"cart_add": 40.0, "product_views": 41.5}),
        _score("p-b", "s-b1", 20.0, {"dwell": 20.0}),
    ])  # fmt: skip
    _upsert(spark, settings, "gold.user_segments", [
        _segment("p-a", "High Intent", 81.5, "s-a1"), _segment("p-b", "Browser", 20.0, "s-b1"),
    ])  # fmt: skip
    _upsert(spark, settings, "silver.identity_map", [
        _identity("anonymous_id", "anon-a", "p-a"), _identity("user_id", "user-a", "p-a"),
        _identity("anonymous_id", "anon-b", "p-b"), _identity("email_hash", "h-b", "p-b"),
    ])  # fmt: skip
    _upsert(spark, settings, "silver.profiles", [
        {"person_id": "p-a", "user_id": "user-a", "email": "a@example.com", "consent_analytics": True,
         "consent_marketing": False, "consent_personalization": True, "consent_updated_at": T0,
         "consent_source": "segment", "updated_at": T0},
    ])  # fmt: skip
    _upsert(spark, settings, "gold.content_assignments", [
        {"person_id": "p-a", "channel": "email", "rule": "cart_rescue", "priority": 90, "tone": "urgent",
         "format": "reminder", "cta": "Complete your order", "segment": "High Intent", "intent_score": 81.5,
         "session_id": "s-a1", "best_local_hour": 19, "rules_version": "abc123abc123", "evaluated_at": T0},
    ])  # fmt: skip
    _upsert(spark, settings, "gold.send_times", [
        {"person_id": "p-a", "best_local_hour": 19, "timezone": "Europe/Paris", "source": "person",
         "confidence": 0.5, "sessions": 4, "segment": "High Intent", "window_end": T0},
    ])  # fmt: skip


def _person(settings, person_id: str) -> dict | None:
    connection = store.client(settings)
    try:
        record = store.person(connection, settings, person_id)
    finally:
        connection.close()
    if record:
        record.pop("updated_at")
    return record


def test_the_store_follows_the_tables_changes_and_never_goes_back_to_an_older_value(spark, online_settings):
    settings = online_settings
    _lakehouse(spark, settings)
    first = store.update_online_store(spark, settings)
    assert {s.table: s.mode for s in first.sources} == dict.fromkeys(
        ("gold.user_segments", "gold.send_times", "gold.content_assignments", "silver.profiles",
         "silver.identity_map"), "rebuild")  # fmt: skip
    assert _person(settings, "p-a") == {
        "segment": "High Intent", "intent_score": 81.5, "model_version": "weighted-v1", "session_id": "s-a1",
        "last_seen_at": "2026-11-02T12:00:00.000000Z", "sessions": 2,
        "contributions": {"cart_add": 40.0, "product_views": 41.5},
        "best_local_hour": 19, "timezone": "Europe/Paris", "send_source": "person", "send_confidence": 0.5,
        "consent_analytics": True, "consent_marketing": False, "consent_personalization": True,
        "consent_updated_at": "2026-11-02T12:00:00.000000Z",
        "content": {"email": {"rule": "cart_rescue", "priority": 90, "tone": "urgent", "format": "reminder",
                              "cta": "Complete your order", "rules_version": "abc123abc123",
                              "evaluated_at": "2026-11-02T12:00:00.000000Z"}},
    }  # fmt: skip
    assert _person(settings, "p-b")["segment"] == "Browser" and "consent_marketing" not in _person(settings, "p-b")
    connection = store.client(settings)
    assert store.resolve(connection, settings, "anonymous_id", "anon-b") == "p-b"
    assert store.resolve(connection, settings, "email_hash", "h-b") is None  # not an id the API is asked with
    ttl = connection.ttl(settings.redis_prefix + "p:p-a")
    assert settings.online_ttl_days * 86400 - 60 < ttl <= settings.online_ttl_days * 86400
    # nothing new: nothing written
    again = store.update_online_store(spark, settings)
    assert {s.mode for s in again.sources} == {"current"} and again.written == 0

    # p-a converts to a new segment; p-b merges into p-a (its row goes, its device moves)
    segments_before = table_version(spark, settings, "gold.user_segments")
    _upsert(spark, settings, "gold.session_scores", [_score("p-a", "s-a2", 95.0, {"purchase": 95.0})])
    _upsert(spark, settings, "gold.user_segments", [_segment("p-a", "Converter", 95.0, "s-a2")])
    DeltaTable.forPath(spark, str(settings.table_path("gold.user_segments"))).delete("person_id = 'p-b'")
    _upsert(spark, settings, "silver.identity_map", [_identity("anonymous_id", "anon-b", "p-a")])
    moved = store.update_online_store(spark, settings)
    changes = {s.table: s for s in moved.sources}
    assert changes["gold.user_segments"].mode == "changes"
    assert (changes["gold.user_segments"].from_version, changes["gold.user_segments"].to_version) == (
        segments_before, segments_before + 2)  # fmt: skip
    assert changes["gold.user_segments"].written == 2  # p-a's latest, p-b's delete
    a = _person(settings, "p-a")
    assert (a["segment"], a["intent_score"], a["contributions"]) == ("Converter", 95.0, {"purchase": 95.0})
    assert _person(settings, "p-b") is None  # its segment group went with its row
    assert store.resolve(connection, settings, "anonymous_id", "anon-b") == "p-a"

    # a run that read the feed only up to an older version and writes after a newer run has (the pipeline's
    # step and the audience DAG's task at once): every one of its older values is refused
    segments = next(s for s in store.SOURCES if s.table == "gold.user_segments")
    late = store._changes(spark, settings, "gold.user_segments", segments_before, segments_before)
    assert store._write(spark, settings, segments, late, force=False) == (0, 2)  # (written, skipped)
    assert _person(settings, "p-a")["segment"] == "Converter"
    assert _person(settings, "p-b") is None  # p-b's older insert does not bring them back

    # the offset set back (a run killed after its writes, before it recorded them): the range is applied
    # again and the store ends where it was
    connection.hset(settings.redis_prefix + "meta:gold.user_segments", "version", segments_before - 1)
    replayed = {s.table: s for s in store.update_online_store(spark, settings).sources}["gold.user_segments"]
    assert replayed.mode == "changes" and replayed.to_version == segments_before + 2
    assert _person(settings, "p-a") == a and _person(settings, "p-b") is None
    connection.close()


def test_a_redis_that_lost_its_data_is_rebuilt_from_the_tables_and_erasure_removes_the_person(
    spark, online_settings, redis_url
):
    settings = online_settings
    _lakehouse(spark, settings)
    store.update_online_store(spark, settings)
    before = {p: _person(settings, p) for p in ("p-a", "p-b")}

    redis_url.restart()  # nothing is persisted: every key is gone, the offsets with them
    assert _person(settings, "p-a") is None
    rebuilt = store.update_online_store(spark, settings)
    assert {s.mode for s in rebuilt.sources} == {"rebuild"}
    assert "Redis lost its data" in rebuilt.sources[0].reason
    assert {p: _person(settings, p) for p in ("p-a", "p-b")} == before

    deleted = store.erase(settings, {"p-a"}, anonymous_ids={"anon-a"}, user_ids={"user-a", "never-seen"})
    assert deleted == 3  # the hash and two ids; an id the store never had counts nothing
    connection = store.client(settings)
    assert _person(settings, "p-a") is None
    assert store.resolve(connection, settings, "anonymous_id", "anon-a") is None
    assert store.resolve(connection, settings, "user_id", "user-a") is None
    assert _person(settings, "p-b") == before["p-b"]
    connection.close()


def test_without_a_redis_url_the_store_says_which_setting_is_missing(settings):
    with pytest.raises(store.OnlineStoreError, match="INTENTLAKE_REDIS_URL"):
        store.client(settings)


def test_a_redis_that_does_not_answer_is_named(spark, settings):
    from dataclasses import replace

    quiet = replace(settings, redis_url="redis://127.0.0.1:9/0")  # the discard port: nothing listens
    with pytest.raises(store.OnlineStoreError, match="does not answer"):
        store.update_online_store(spark, quiet)
