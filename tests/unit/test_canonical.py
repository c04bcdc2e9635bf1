"""IoT beacons, canonical input of several schema versions, campaigns and the bronze watermark (pure Python)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from spark_jobs.bronze.normalize import (
    DEFAULT_LIMITS,
    Reason,
    RejectedEvent,
    SchemaRegistry,
    SchemaRegistryError,
    normalize_line,
)
from spark_jobs.contracts import TABLES_DIR

pytestmark = pytest.mark.unit

BEACON = {
    "reading_id": "gw7-000918", "gateway_id": "gw-ber-07", "store_id": "BER-07", "zone": "electronics",
    "seen_at": 1793614512340, "uplink_at": "2026-11-02T10:15:13Z", "subject_id": "app-inst-5f2a", "user_id": "u-88",
    "platform": "android", "beacon": {"uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "major": 12, "minor": 7,
                                      "battery": 81},
    "rssi": -67, "tx_power": -59, "proximity": "near", "firmware": "2.4.1",
    "position": {"lat": 52.5163, "lon": 13.3777, "country": "DE", "city": "Berlin", "timezone": "Europe/Berlin"},
    "consent": ["analytics", "personalization"], "dwell_ms": 4200,
}  # fmt: skip

V1_EVENT = {
    "event_id": "exp-1", "event_type": "click", "occurred_at": "2026-11-02T10:00:00+01:00",
    "received_at": "2026-11-02T09:00:01Z", "anonymous_id": "a-9", "session_id": "s-9",
    "properties": {"decision_id": "d-1"}, "source": {"kind": "web_sdk", "sdk": "decision-api", "version": "1.0"},
    "schema_version": 1,
}  # fmt: skip
CAMPAIGN = {"source": "newsletter", "medium": "email", "name": "black-friday", "term": None, "content": "hero"}


def test_beacon_sighting_becomes_a_location_event():
    assert normalize_line(json.dumps(BEACON)) == {
        "event_id": "gw7-000918", "event_type": "location",
        "occurred_at": "2026-11-02T10:15:12.340000Z", "received_at": "2026-11-02T10:15:13.000000Z",
        "user_id": "u-88", "anonymous_id": "app-inst-5f2a", "session_id": None,
        "device": {"type": "mobile", "os": "Android", "user_agent": None},
        "context": {"ip": None, "locale": None, "timezone": "Europe/Berlin",
                    "geo": {"lat": 52.5163, "lon": 13.3777, "country": "DE", "city": "Berlin"}},
        "page": {"url": None, "path": None, "referrer": None},
        "properties": {"beacon_uuid": "f7826da6-4fa2-4e98-8024-bc5b71e0893e", "beacon_major": "12",
                       "beacon_minor": "7", "gateway_id": "gw-ber-07", "store_id": "BER-07", "zone": "electronics",
                       "rssi": "-67", "tx_power": "-59", "proximity": "near", "distance_m": "3",
                       "dwell_ms": "4200", "beacon.battery": "81"},
        "consent": ["analytics", "personalization"], "campaign": None,
        "source": {"kind": "iot_beacon", "sdk": "beacon-gateway", "version": "2.4.1"},
        "schema_version": 3, "event_name": "beacon_sighting",
    }  # fmt: skip


def test_beacon_without_a_subject_is_a_schema_violation_naming_the_field():
    with pytest.raises(RejectedEvent, match="anonymous_id") as caught:
        normalize_line(json.dumps({k: v for k, v in BEACON.items() if k != "subject_id"}))
    assert caught.value.reason == Reason.SCHEMA_VIOLATION and caught.value.event_id == "gw7-000918"


def test_canonical_v1_and_v2_are_accepted_side_by_side():
    v1 = normalize_line(json.dumps(V1_EVENT))
    assert v1["schema_version"] == 1 and v1["campaign"] is None
    assert v1["occurred_at"] == "2026-11-02T09:00:00.000000Z"  # offsets normalised to UTC
    assert v1["device"] is None and v1["properties"] == {"decision_id": "d-1"}
    v2 = normalize_line(json.dumps({**V1_EVENT, "schema_version": 2, "campaign": CAMPAIGN}))
    assert v2["schema_version"] == 2 and v2["campaign"] == CAMPAIGN


def test_a_field_a_version_does_not_define_is_kept_in_properties_or_rejected_by_type():
    # v1 has no campaign: the v1 event keeps it in properties instead of dropping it
    kept = normalize_line(json.dumps({**V1_EVENT, "campaign": CAMPAIGN}))
    assert json.loads(kept["properties"]["campaign"])["name"] == "black-friday" and kept["campaign"] is None
    with pytest.raises(RejectedEvent, match=r"campaign\.name"):
        normalize_line(json.dumps({**V1_EVENT, "schema_version": 2, "campaign": {**CAMPAIGN, "name": 7}}))
    with pytest.raises(RejectedEvent, match="event_type"):  # 'location' arrived with v2
        normalize_line(json.dumps({**V1_EVENT, "event_type": "location"}))


def test_unregistered_version_names_the_registered_ones(tmp_path):
    shutil.copy(TABLES_DIR / "events" / "canonical_event.v1.schema.json", tmp_path)
    only_v1 = SchemaRegistry.load(tmp_path)
    assert only_v1.versions == (1,)
    with pytest.raises(RejectedEvent, match=r"schema_version: not a registered .* \(registered: 1; got integer\)"):
        normalize_line(json.dumps({**V1_EVENT, "schema_version": 2}), registry=only_v1)
    shutil.copy(TABLES_DIR / "events" / "canonical_event.v2.schema.json", tmp_path)  # no restart: reload
    assert normalize_line(json.dumps({**V1_EVENT, "schema_version": 2}), registry=SchemaRegistry.load(tmp_path))


def test_a_broken_schema_file_is_named(tmp_path):
    (tmp_path / "canonical_event.v3.schema.json").write_text('{"properties": {"schema_version": {"const": 4}}}')
    with pytest.raises(SchemaRegistryError, match=r"canonical_event\.v3\.schema\.json: schema_version const is 4"):
        SchemaRegistry.load(tmp_path)
    with pytest.raises(SchemaRegistryError, match="holds no canonical_event"):
        SchemaRegistry.load(tmp_path / "missing")


def test_campaign_from_utm_parameters_and_segment_context():
    url = "https://shop.example.com/?utm_source=newsletter&utm_medium=email&utm_campaign=black-friday"
    web = {"sdk": "intentlake-web", "kind": "pageview", "eid": "e-1", "ts": 1793614512340, "anon": "a-1", "url": url}
    assert normalize_line(json.dumps(web))["campaign"] == {
        "source": "newsletter", "medium": "email", "name": "black-friday", "term": None, "content": None,
    }  # fmt: skip
    segment = {"type": "page", "messageId": "m-1", "anonymousId": "a-1", "timestamp": "2026-11-02T08:00:00Z",
               "context": {"campaign": {"source": "google", "medium": "cpc", "name": "shoes"},
                           "app": {"name": "shop", "build": "512"}, "network": {"wifi": True}}}  # fmt: skip
    event = normalize_line(json.dumps(segment))
    assert event["campaign"]["name"] == "shoes"
    # context fields without a canonical column are kept, not dropped
    assert json.loads(event["properties"]["context.app"]) == {"build": "512", "name": "shop"}
    assert event["properties"]["context.network"] == '{"wifi":true}'


def test_an_event_older_than_the_watermark_is_too_late():
    watermark = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    limits = replace(DEFAULT_LIMITS, watermark_us=int(watermark.timestamp() * 1_000_000))
    on_time = normalize_line(json.dumps({**V1_EVENT, "occurred_at": "2026-11-02T09:00:00Z"}), limits)
    assert on_time["event_id"] == "exp-1"
    with pytest.raises(RejectedEvent, match=r"before the bronze watermark 2026-11-02T09:00:00\.000000Z") as caught:
        normalize_line(json.dumps({**V1_EVENT, "occurred_at": "2026-11-02T08:59:59Z"}), limits)
    assert caught.value.reason == Reason.TOO_LATE
