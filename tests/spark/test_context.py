"""add_context on tiny bronze-shaped frames (real Spark): time zone sources, DST-correct local times,
weekday, daypart and user-agent columns."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from spark_jobs.contracts import table_contract
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver.context import CONTEXT_COLUMNS, ContextConfig, IpTimezones, add_context, iana_zones, spark_zones

pytestmark = pytest.mark.spark

CFG = ContextConfig.load(REPO_ROOT / "config" / "context.yaml")
IPS = IpTimezones.load(REPO_ROOT / "config" / "ip_timezones.csv")
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
OUTPUT = (
    "event_id STRING, tz STRING, tz_source STRING, local_time TIMESTAMP_NTZ, local_hour INT, local_weekday INT, "
    "daypart STRING, ua_device_type STRING, ua_os STRING, ua_browser STRING"
)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _events(spark, rows):
    """rows: (event_id, occurred_at, timezone, (lat, lon) or None, ip, user_agent)."""
    data = [
        {
            "event_id": event_id, "event_type": "page_view", "occurred_at": at, "received_at": at,
            "user_id": None, "anonymous_id": "a1", "session_id": None,
            "device": {"type": None, "os": None, "user_agent": ua},
            "context": {"ip": ip, "locale": None, "timezone": tz,
                        "geo": None if geo is None else {"lat": geo[0], "lon": geo[1], "country": None, "city": None}},
            "page": {"url": None, "path": "/", "referrer": None}, "properties": {}, "consent": [],
            "source": {"kind": "web_sdk", "sdk": None, "version": None}, "schema_version": 1,
            "event_date": at.date(), "ingested_at": at, "source_file": "f", "ingest_batch": "q/0",
        }
        for event_id, at, tz, geo, ip, ua in rows
    ]  # fmt: skip
    return spark.createDataFrame(data, table_contract("bronze.events").schema())


def _context(events):
    return add_context(events, CFG, IPS).select("event_id", *CONTEXT_COLUMNS)


def test_each_event_gets_its_zone_local_time_and_device_from_the_first_source_that_resolves(spark):
    events = _events(spark, [
        # Berlin springs forward on 2026-03-29 at 01:00 UTC (02:00 local becomes 03:00).
        ("berlin-before-dst", _utc(2026, 3, 29, 0, 30), "Europe/Berlin", None, None, IPHONE),
        ("berlin-after-dst", _utc(2026, 3, 29, 1, 30), "Europe/Berlin", None, None, IPHONE),
        # New York falls back on 2026-11-01 at 06:00 UTC (02:00 EDT becomes 01:00 EST): 01:30 happens twice.
        ("ny-edt", _utc(2026, 11, 1, 5, 30), "America/New_York", None, None, WINDOWS),
        ("ny-est", _utc(2026, 11, 1, 6, 30), "America/New_York", None, None, WINDOWS),
        ("tokyo-by-position", _utc(2026, 11, 2, 10, 0), None, (35.68, 139.69), "192.0.2.1", None),
        ("bad-zone-then-position", _utc(2026, 11, 2, 10, 0), "Mars/Olympus", (52.52, 13.40), None, ""),
        ("tokyo-by-ip", _utc(2026, 11, 6, 23, 0), None, None, "203.0.113.50", IPHONE),
        ("nothing", _utc(2026, 11, 2, 10, 0), None, None, "10.0.0.1", "curl/8.5.0"),
    ])  # fmt: skip
    expected = spark.createDataFrame(
        [
            ("berlin-before-dst", "Europe/Berlin", "event", datetime(2026, 3, 29, 1, 30), 1, 7, "night",
             "mobile", "iOS 17.4", "Mobile Safari 17"),
            ("berlin-after-dst", "Europe/Berlin", "event", datetime(2026, 3, 29, 3, 30), 3, 7, "night",
             "mobile", "iOS 17.4", "Mobile Safari 17"),
            ("ny-edt", "America/New_York", "event", datetime(2026, 11, 1, 1, 30), 1, 7, "night",
             "desktop", "Windows 10", "Chrome 124"),
            ("ny-est", "America/New_York", "event", datetime(2026, 11, 1, 1, 30), 1, 7, "night",
             "desktop", "Windows 10", "Chrome 124"),
            ("tokyo-by-position", "Asia/Tokyo", "geo", datetime(2026, 11, 2, 19, 0), 19, 1, "evening",
             None, None, None),
            ("bad-zone-then-position", "Europe/Berlin", "geo", datetime(2026, 11, 2, 11, 0), 11, 1, "morning",
             None, None, None),
            # Friday 23:00 UTC is Saturday 08:00 in Tokyo.
            ("tokyo-by-ip", "Asia/Tokyo", "ip", datetime(2026, 11, 7, 8, 0), 8, 6, "morning",
             "mobile", "iOS 17.4", "Mobile Safari 17"),
            ("nothing", None, None, None, None, None, None, None, None, "curl 8"),
        ],
        OUTPUT,
    )  # fmt: skip
    assert_df_equality(_context(events), expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)


def test_input_columns_come_first_unchanged_then_the_context_columns(spark):
    """Callers add context to sessionized events too, so columns beyond bronze's must survive."""
    events = _events(spark, [("e1", _utc(2026, 11, 2, 10, 0), None, None, None, None)])
    keyed = events.withColumn("session_key", F.concat(F.lit("a1#"), "event_id"))
    result = add_context(keyed, CFG, IPS)
    assert result.schema.fields[: len(keyed.columns)] == keyed.schema.fields
    assert result.columns[len(keyed.columns) :] == list(CONTEXT_COLUMNS)


def test_a_zone_python_knows_but_spark_does_not_falls_through_instead_of_failing(spark):
    unknown_to_jvm = sorted(iana_zones() - spark_zones(spark))
    if not unknown_to_jvm:
        pytest.skip("this JVM knows every zone Python does")
    events = _events(spark, [("e1", _utc(2026, 11, 2, 10, 0), unknown_to_jvm[0], None, "203.0.113.1", None)])
    row = _context(events).first()
    assert (row.tz, row.tz_source, row.local_hour) == ("Asia/Tokyo", "ip", 19)
