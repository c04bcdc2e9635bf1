"""Raw IPs expire: maintenance cuts bronze.events' context.ip to its network once the retention has passed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from delta.tables import DeltaTable

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.maintenance import expire_ips
from tests.helpers import table

pytestmark = pytest.mark.spark

NOW = datetime(2026, 12, 10, 3, 0, tzinfo=UTC)  # retention 30 days: event dates before 2026-11-10 are cut


def ev(event_id: str, days_ago: int, ip: str | None) -> dict:
    when = NOW - timedelta(days=days_ago)
    return {
        "event_id": event_id, "event_type": "page_view", "occurred_at": when, "received_at": when,
        "user_id": None, "anonymous_id": f"a-{event_id}", "session_id": None,
        "device": {"type": "mobile", "os": "iOS", "user_agent": "Mozilla/5.0"},
        "context": {"ip": ip, "locale": "de-DE", "timezone": None, "geo": None},
        "page": {"url": None, "path": "/", "referrer": None}, "properties": {}, "consent": [],
        "source": {"kind": "web_sdk", "sdk": None, "version": None}, "schema_version": 2,
        "event_date": when.date(), "ingested_at": when, "source_file": "f", "ingest_batch": "q/0",
    }  # fmt: skip


def versions(spark, settings) -> int:
    return DeltaTable.forPath(spark, str(settings.table_path("bronze.events"))).history(1).first().version


def ips(spark, settings) -> dict[str, str | None]:
    return {r.event_id: r.context.ip for r in table(spark, settings, "bronze.events").collect()}


@pytest.fixture
def bronze(spark, settings):
    """bronze.events holding old and recent rows, IPv4 and IPv6."""
    ensure_tables(spark, settings, ("bronze.events",))
    rows = [
        ev("old-v4", 45, "203.0.113.77"),
        ev("old-v6", 31, "2001:db8:ab:cd:1:2:3:4"),
        ev("old-mapped", 60, "::ffff:198.51.100.7"),
        ev("old-cut", 90, "192.0.2.0"),  # already a network: nothing to do
        ev("old-none", 40, None),
        ev("old-junk", 35, "secret@example.com"),  # not an IP: dropped, not kept
        ev("edge", 30, "203.0.113.78"),  # exactly 30 days: still kept whole
        ev("new-v4", 2, "203.0.113.79"),
        ev("new-v6", 0, "2001:db8:ab:cd::9"),
    ]
    frame = spark.createDataFrame(rows, table_contract("bronze.events").schema())
    frame.write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))
    return settings


def test_ips_older_than_the_retention_are_cut_to_their_network_once(spark, bronze):
    settings = bronze
    assert settings.ip_retention_days == 30
    assert expire_ips(spark, settings, NOW) == 4
    assert ips(spark, settings) == {
        "old-v4": "203.0.113.0",
        "old-v6": "2001:db8:ab::",
        "old-mapped": "::ffff:198.51.100.0",
        "old-cut": "192.0.2.0",
        "old-none": None,
        "old-junk": None,
        "edge": "203.0.113.78",
        "new-v4": "203.0.113.79",
        "new-v6": "2001:db8:ab:cd::9",
    }
    version = versions(spark, settings)
    assert expire_ips(spark, settings, NOW) == 0  # a second run (a retried task) changes nothing ...
    assert versions(spark, settings) == version  # ... and commits no table version
    other = table(spark, settings, "bronze.events").where("event_id = 'old-v4'").first()
    assert other.context.locale == "de-DE" and other.device.user_agent == "Mozilla/5.0"  # only the IP changes


def test_a_retention_of_zero_cuts_every_row(spark, bronze):
    settings = replace(bronze, ip_retention_days=0)
    assert expire_ips(spark, settings, NOW) == 7
    assert ips(spark, settings)["new-v6"] == "2001:db8:ab::" and ips(spark, settings)["edge"] == "203.0.113.0"
    assert expire_ips(spark, settings, NOW) == 0
