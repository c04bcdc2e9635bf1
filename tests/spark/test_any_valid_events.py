"""Property: any valid events, in any order and any mix of sources, go through bronze -> silver -> gold.

Hypothesis generates canonical events (v1, v2, v3) whose optional fields are absent, null or at their edges
(empty property maps, odd property values where silver reads numbers, the longest texts the schema allows,
geo at the poles and the date line, unknown time zones, custom events, bots, shared client session ids,
track calls without any page), plus the same events as Segment track calls. Each example runs the three
streams on a fresh lakehouse and checks that nothing fails and every event is accounted for: every line is
in bronze (or counted as a duplicate), every bronze event is in exactly one silver session, and every session
that is not a bot's is scored. The examples are derandomized and bounded: the same ones run in CI every time.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from spark_jobs.bronze import job as bronze
from spark_jobs.gold import job as gold
from spark_jobs.silver import job as silver
from tests.helpers import bronze_totals, table

pytestmark = pytest.mark.spark

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
EVENT_TYPES = ("page_view", "product_view", "scroll", "click", "search", "cart_add", "wishlist_add", "purchase",
               "identify")  # fmt: skip
V2_TYPES = (*EVENT_TYPES, "location")
V3_TYPES = (*V2_TYPES, "custom", "cart_remove", "form", "consent")
KINDS_V1 = ("segment", "web_sdk", "mobile_sdk", "server_log", "snowplow")
KINDS = (*KINDS_V1, "iot_beacon", "api")
EDGE_TEXT = st.one_of(st.none(), st.just(""), st.text(max_size=12), st.just("x" * 256), st.just("ü\u200b🛒"))
# what silver parses as numbers or keys: numbers, garbage, extremes
PROPERTY_VALUES = st.one_of(st.none(), st.just(""), st.sampled_from(["0", "100", "-5", "abc", "1e309", "NaN", "75.5"]),
                            st.text(max_size=8))  # fmt: skip
PROPERTIES = st.dictionaries(
    st.sampled_from(["scroll_depth", "product_id", "query", "price", "revenue", "order_id", "x", "y", "button_id",
                     "label"]),
    PROPERTY_VALUES,
    max_size=5,
)  # fmt: skip
NULLABLE_TEXT = st.one_of(st.none(), st.text(min_size=1, max_size=10))


def _maybe(strategy):
    """A field that may be absent (the marker), null, or a value."""
    return st.one_of(st.just(...), st.none(), strategy)


@st.composite
def canonical_event(draw, index: int) -> dict:
    version = draw(st.sampled_from((1, 2, 3)))
    event_type = draw(st.sampled_from({1: EVENT_TYPES, 2: V2_TYPES, 3: V3_TYPES}[version]))
    occurred = T0 + timedelta(seconds=draw(st.integers(0, 6 * 3600)))
    received = occurred + timedelta(seconds=draw(st.integers(0, 600)))
    event = {
        "event_id": f"h{index:04d}-" + draw(st.text("abc123-", min_size=0, max_size=8)),
        "event_type": event_type,
        "occurred_at": occurred.isoformat().replace("+00:00", "Z"),
        "received_at": received.isoformat().replace("+00:00", "Z"),
        "anonymous_id": draw(st.sampled_from(["a1", "a2", "a3", "dev-" + "z" * 250, "ü-device"])),
        "source": {"kind": draw(st.sampled_from(KINDS_V1 if version == 1 else KINDS))},
        "schema_version": version,
    }
    optional = {
        "user_id": _maybe(st.sampled_from(["u1", "u2", "u" * 256])),
        "session_id": _maybe(st.sampled_from(["1", "2", "shared", "s" * 256])),  # shared across devices
        "device": _maybe(st.fixed_dictionaries({}, optional={
            "type": st.sampled_from(["desktop", "mobile", "tablet", None, *(["bot"] if version == 3 else [])]),
            "os": NULLABLE_TEXT, "user_agent": st.one_of(st.none(), st.just("Googlebot/2.1"), st.just("u" * 1024),
                                                         st.text(max_size=20))})),
        "context": _maybe(st.fixed_dictionaries({}, optional={
            "ip": st.sampled_from([None, "198.51.100.7", "2001:db8::1", "not-an-ip"]),
            "locale": NULLABLE_TEXT,
            "timezone": st.sampled_from([None, "Europe/Berlin", "Pacific/Kiritimati", "Not/AZone", ""]),
            "geo": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
                "lat": st.one_of(st.none(), st.sampled_from([-90, 90, 0, 52.5])),
                "lon": st.one_of(st.none(), st.sampled_from([-180, 180, 0, 13.4])),
                "country": NULLABLE_TEXT, "city": NULLABLE_TEXT}))})),
        "page": _maybe(st.fixed_dictionaries({}, optional={
            "url": st.one_of(st.none(), st.just("https://shop.example.com/x?utm_source=a"), st.text(max_size=20)),
            "path": st.one_of(st.none(), st.sampled_from(["/", "/checkout", "/product/p1", ""]), st.text(max_size=10)),
            "referrer": st.one_of(st.none(), st.just("https://www.google.com/"), st.text(max_size=10))})),
        "properties": st.one_of(st.just(...), PROPERTIES),
        "consent": st.one_of(st.just(...), st.lists(st.sampled_from(["analytics", "marketing", "personalization"]),
                                                    unique=True)),
    }  # fmt: skip
    if version >= 2:
        optional["campaign"] = _maybe(
            st.fixed_dictionaries({}, optional={f: EDGE_TEXT for f in ("source", "medium", "name", "term", "content")})
        )
    if version == 3:
        optional["event_name"] = _maybe(st.sampled_from(["Coupon Applied", "Video Played", "n" * 256]))
    for name, strategy in optional.items():
        value = draw(strategy)
        if value is not ...:
            event[name] = value
    if event_type == "custom" and not event.get("event_name"):
        event["event_name"] = draw(st.sampled_from(["Coupon Applied", "Signed Up"]))
    return event


def as_segment_track(event: dict) -> dict:
    """The same event as a server-side Segment track call: no page, only what the call needs."""
    names = {"cart_add": "Product Added", "purchase": "Order Completed", "search": "Products Searched"}
    return {"type": "track", "messageId": event["event_id"], "anonymousId": event["anonymous_id"],
            "userId": event.get("user_id"), "timestamp": event["occurred_at"], "receivedAt": event["received_at"],
            "event": names.get(event["event_type"], event.get("event_name") or "Something Custom"),
            "properties": {k: v for k, v in (event.get("properties") or {}).items() if v is not None}}  # fmt: skip


@st.composite
def event_lines(draw) -> list[str]:
    count = draw(st.integers(20, 60))
    events = [draw(canonical_event(i)) for i in range(count)]
    lines = [json.dumps(e) if draw(st.booleans()) or e["event_type"] == "location" else json.dumps(as_segment_track(e))
             for e in events]  # fmt: skip
    return draw(st.permutations(lines))  # any order


@hypothesis_settings(
    max_examples=int(os.environ.get("INTENTLAKE_PROPERTY_EXAMPLES", "2")),
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(lines=event_lines())
def test_any_valid_events_go_through_bronze_silver_and_gold_and_each_is_accounted_for(spark, tmp_path_factory, lines):
    from spark_jobs.settings import Settings

    settings = replace(Settings.from_env().with_root(tmp_path_factory.mktemp("any") / "lakehouse"),
                       shuffle_partitions=2)  # fmt: skip
    settings.landing.mkdir(parents=True)
    (settings.landing / "events.ndjson").write_text("\n".join(lines) + "\n")
    for layer in (bronze, silver, gold):
        layer.run(spark, settings)  # raises if a stream fails on any event
    events = table(spark, settings, "bronze.events")
    quarantine = table(spark, settings, "bronze.quarantine")
    # the contract accepts them all; bronze's data quality gate may set one aside (a negative revenue ...), with
    # its reason, and nothing else may
    reasons = {r.reason for r in quarantine.select("reason").distinct().collect()}
    assert reasons <= {"quality_check_failed"}, quarantine.groupBy("reason", "detail").count().collect()
    totals = bronze_totals(spark, settings)
    assert totals.i == len(lines) == events.count() + quarantine.count() + totals.d  # nothing lost
    sessions = table(spark, settings, "silver.sessions")
    late = table(spark, settings, "silver.late_events").count()
    assert sessions.selectExpr("coalesce(sum(event_count), 0)").first()[0] + late == events.count()
    assert sessions.select("session_id").distinct().count() == sessions.count()  # unique across devices
    scored = sessions.filter("device_type IS NULL OR device_type != 'bot'")
    assert table(spark, settings, "gold.session_scores").count() == scored.count()
    assert table(spark, settings, "gold.session_scores").filter("intent_score < 0 OR intent_score > 100").count() == 0
