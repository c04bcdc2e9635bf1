"""Sessionization and session features on tiny inline frames (real Spark)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_df_equality

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver import identity
from spark_jobs.silver.context import ContextConfig, IpTimezones
from spark_jobs.silver.identity import Ident
from spark_jobs.silver.sessions import SessionRules, build_sessions, sessionize

pytestmark = pytest.mark.spark

T0 = datetime(2026, 11, 2, 10, 0, 0, tzinfo=UTC)
EVENT_SCHEMA = ", ".join(item for item in table_contract("bronze.events").columns_ddl.split("\n") if item.strip())


def _events(spark, rows, prefix="e", t0=T0, timezone="Europe/Berlin", device_type="mobile"):
    """rows: (anonymous_id, seconds after t0, event_type, props, session_id, user_id, path); an event_type
    custom:<name> is a custom event of that name."""
    data = []
    for i, (anon, sec, etype, props, sid, uid, path) in enumerate(rows):
        at = t0 + timedelta(seconds=sec)
        name = etype.removeprefix("custom:") if etype.startswith("custom:") else None
        data.append({
            "event_id": f"{prefix}{i:03d}", "event_type": "custom" if name else etype, "event_name": name,
            "occurred_at": at, "received_at": at, "user_id": uid, "anonymous_id": anon, "session_id": sid,
            "device": {"type": device_type, "os": "iOS", "user_agent": "ua"},
            "context": {"ip": None, "locale": None, "timezone": timezone, "geo": None},
            "page": {"url": None, "path": path, "referrer": None}, "properties": props, "consent": [],
            "source": {"kind": "web_sdk", "sdk": None, "version": None}, "schema_version": 1,
            "event_date": at.date(), "ingested_at": at, "source_file": "f", "ingest_batch": "q/0",
        })  # fmt: skip
    return spark.createDataFrame(data, table_contract("bronze.events").schema())


KEY = b"session-test-hash-key-0123456789abcdef"  # the silver job passes hash_key(settings)


def person_id_of(ident: Ident) -> str:
    return identity.person_id_of(ident, KEY)


def rules(timeout_seconds=300, max_length_seconds=4 * 3600) -> SessionRules:
    return SessionRules(
        timeout_seconds=timeout_seconds,
        max_length_seconds=max_length_seconds,
        engaged_gap_cap_seconds=30.0,
        refinement_gap_seconds=300.0,
        context=ContextConfig.load(REPO_ROOT / "config" / "context.yaml"),
        ip_table=IpTimezones.load(REPO_ROOT / "config" / "ip_timezones.csv"),
    )


def sessions_of(events, timeout_seconds=300, watermark_us=None, max_length_seconds=4 * 3600):
    r = rules(timeout_seconds, max_length_seconds)
    return build_sessions(sessionize(events, r), r, watermark_us, key=KEY)


def _view(anon, sec, path="/", sid=None, uid=None):
    return (anon, sec, "page_view", {}, sid, uid, path)


def _starts(sessions):
    return sorted((r.anonymous_id, r.session_start, r.event_count) for r in sessions.collect())


@pytest.mark.parametrize(
    ("gap_seconds", "expected_sessions"),
    [(299, 1), (300, 2), (301, 2)],
    ids=["just-under-timeout", "exactly-timeout", "just-over-timeout"],
)
def test_a_gap_of_at_least_the_timeout_starts_a_new_session(spark, gap_seconds, expected_sessions):
    events = _events(spark, [_view("a1", 0), _view("a1", gap_seconds)])
    assert sessions_of(events, timeout_seconds=300).count() == expected_sessions


def test_events_out_of_order_are_sessionized_by_event_time(spark):
    events = _events(spark, [_view("a1", 700), _view("a1", 0), _view("a1", 120), _view("a1", 600)])
    assert _starts(sessions_of(events, 300)) == [
        ("a1", T0.replace(tzinfo=None), 2),
        ("a1", (T0 + timedelta(seconds=600)).replace(tzinfo=None), 2),
    ]


def test_a_late_event_that_bridges_two_sessions_merges_them(spark):
    apart = [_view("a1", 0), _view("a1", 400)]
    assert sessions_of(_events(spark, apart), 300).count() == 2
    bridged = [*apart, _view("a1", 200)]
    assert _starts(sessions_of(_events(spark, bridged), 300)) == [("a1", T0.replace(tzinfo=None), 3)]


def test_a_client_session_id_is_honoured_across_an_idle_gap(spark):
    events = _events(spark, [_view("a1", 0, sid="s-1"), _view("a1", 3600, sid="s-1"), _view("a1", 7200)])
    sessions = {r.client_session_id: r for r in sessions_of(events, 300).collect()}
    assert sessions["s-1"].event_count == 2 and sessions["s-1"].sessionized_by == "client_session_id"
    assert len(sessions) == 2


def test_devices_are_sessionized_separately(spark):
    events = _events(spark, [_view("a1", 0), _view("a2", 60), _view("a1", 120)])
    assert [(a, n) for a, _, n in _starts(sessions_of(events, 300))] == [("a1", 2), ("a2", 1)]


def test_session_features_for_a_hand_checked_session(spark):
    events = _events(spark, [
        ("a1", 0, "page_view", {}, None, None, "/"),
        ("a1", 30, "product_view", {"product_id": "p1"}, None, None, "/product/p1"),
        ("a1", 90, "scroll", {"scroll_depth": "40"}, None, None, "/product/p1"),
        ("a1", 100, "scroll", {"scroll_depth": "75"}, None, None, "/product/p1"),
        ("a1", 110, "identify", {}, None, "u-1", "/product/p1"),
        ("a1", 120, "cart_add", {"product_id": "p1"}, None, "u-1", "/product/p1"),
        ("a1", 140, "search", {"query": "socks"}, None, "u-1", "/search"),
        ("a1", 200, "purchase", {"order_id": "o1"}, None, "u-1", "/checkout/complete"),
    ])  # fmt: skip
    actual = sessions_of(events, 300, watermark_us=int((T0 + timedelta(hours=1)).timestamp() * 1_000_000))
    start, end = T0.replace(tzinfo=None), (T0 + timedelta(seconds=200)).replace(tzinfo=None)
    expected = spark.createDataFrame(
        [
            {
                "session_id": actual.first().session_id,
                "person_id": person_id_of(Ident("user_id", "u-1")),
                "anonymous_id": "a1",
                "user_id": "u-1",
                "session_start": start,
                "session_end": end,
                "is_closed": True,
                "sessionized_by": "idle_timeout",
                "event_count": 8,
                "page_depth": 2,  # "/" and "/product/p1" were viewed
                "page_views": 2,
                "dwell_seconds": 45.0,  # page_view -> next at 30 s, product_view -> next at 60 s
                "dwell_total_seconds": 90.0,
                "engaged_seconds": 140.0,  # gaps 30, 60, 10, 10, 10, 20, 60, each capped at 30 s
                "max_scroll_depth": 75.0,
                "scroll_velocity": 3.5,  # 40% -> 75% in 10 s
                "scrolls": 2,
                "clicks": 0,
                "click_density": 0.0,
                "product_views": 1,
                "distinct_products": 1,
                "repeat_product_views": 0,
                "cart_adds": 1,
                "wishlist_adds": 0,
                "searches": 1,
                "search_refinements": 0,
                "checkout_started": True,
                "converted": True,
                "drop_off_page": "/checkout/complete",
                "traffic_source": "direct",
                "traffic_medium": "direct",
                "campaign": None,
                "source_kind": "web_sdk",
                "timezone": "Europe/Berlin",
                "timezone_source": "event",
                "local_start": datetime(2026, 11, 2, 11, 0),  # CET, UTC+1
                "local_hour": 11,
                "local_weekday": 1,  # a Monday
                "daypart": "morning",
                "device_type": "mobile",
                "os": "iOS",  # the user agent says nothing: the SDK's OS
                "browser": None,
                "session_phase": "checkout",
                "duration_seconds": 200.0,
                "updated_at": datetime(2026, 1, 1),  # bookkeeping, compared apart
                "session_date": T0.date(),
                "custom_events": {},  # no custom events
                "client_session_id": None,
            }
        ],
        table_contract("silver.sessions").schema(),
    ).drop("updated_at")
    actual = actual.drop("updated_at")
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)
    assert actual.first().session_id.startswith("s-")


def test_session_ids_and_person_ids_are_stable_across_runs(spark):
    rows = [_view("a1", 0), _view("a1", 1000, uid="u-7"), _view("a2", 10)]
    first = sorted((r.session_id, r.person_id) for r in sessions_of(_events(spark, rows), 300).collect())
    again = sorted((r.session_id, r.person_id) for r in sessions_of(_events(spark, rows[::-1]), 300).collect())
    assert first == again
    assert {p for _, p in first} == {person_id_of(Ident("user_id", "u-7")), person_id_of(Ident("anonymous_id", "a2"))}


def test_sessions_close_only_when_the_watermark_passes_end_plus_timeout(spark):
    events = _events(spark, [_view("a1", 0), _view("a1", 60)])
    end_us = int((T0 + timedelta(seconds=60)).timestamp() * 1_000_000)
    assert sessions_of(events, 300, watermark_us=end_us + 299_000_000).first().is_closed is False
    assert sessions_of(events, 300, watermark_us=end_us + 300_000_000).first().is_closed is True
    assert sessions_of(events, 300).first().is_closed is False


def test_a_session_of_track_calls_without_any_page_is_stored(spark, settings):
    """Server-side sources and apps send track calls with no page: such a session meets every NOT NULL
    constraint of silver.sessions (it once failed on checkout_started and stopped silver)."""
    events = _events(spark, [
        ("a1", 0, "cart_add", {"product_id": "p1"}, None, "u-1", None),
        ("a1", 20, "search", {"query": "socks"}, None, "u-1", None),
        ("a1", 40, "purchase", {"order_id": "o1"}, None, "u-1", None),
    ])  # fmt: skip
    sessions = sessions_of(events, 300)
    row = sessions.first()
    assert (row.checkout_started, row.converted, row.page_views, row.page_depth) == (False, True, 0, 0)
    assert row.drop_off_page is None and row.session_phase == "checkout"
    ensure_tables(spark, settings, ("silver.sessions",))
    sessions.write.format("delta").mode("append").save(str(settings.table_path("silver.sessions")))
    assert spark.read.format("delta").load(str(settings.table_path("silver.sessions"))).count() == 1
