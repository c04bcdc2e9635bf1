"""Source adapters and validation: realistic payloads in, canonical events or named reasons out."""

from __future__ import annotations

import json

import pytest

from spark_jobs.bronze.normalize import Reason, RejectedEvent, normalize_line, normalize_records

pytestmark = pytest.mark.unit

SEGMENT_TRACK = {
    "type": "track",
    "event": "Product Added",
    "messageId": "msg-1",
    "anonymousId": "a-1",
    "userId": "u-9",
    "timestamp": "2026-11-02T10:00:00.250Z",
    "sentAt": "2026-11-02T10:00:00.300Z",
    "receivedAt": "2026-11-02T10:00:01Z",
    "properties": {"product_id": "p-7", "price": 49.5, "quantity": 1, "tags": ["a", "b"]},
    "context": {
        "ip": "198.51.100.7",
        "locale": "de-DE",
        "timezone": "Europe/Berlin",
        "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) Mobile/15E148",
        "page": {"url": "https://shop.example.com/product/p-7", "path": "/product/p-7", "referrer": ""},
        "location": {"latitude": 52.52, "longitude": 13.4, "country": "DE", "city": "Berlin"},
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "consent": {"categoryPreferences": {"analytics": True, "marketing": False, "personalization": True}},
    },
    "campaign_code": "BF26",
    "channel": "client",
    "writeKey": "wk-secret",
}

WEB_SDK_CLICK = {
    "sdk": "intentlake-web",
    "sdk_version": "2.3.1",
    "kind": "click",
    "eid": "e-1",
    "ts": 1793620017046,
    "recv_ts": 1793620018070,
    "anon": "a-2",
    "uid": None,
    "sid": "s-2",
    "url": "https://shop.example.com/product/p-1?ref=x",
    "ref": "https://www.google.com/",
    "ua": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/142.0.0.0 Safari/537.36",
    "dev": "desktop",
    "ip": "198.51.100.8",
    "lang": "en-US",
    "tz": "America/New_York",
    "geo": {"lat": 40.71, "lon": -74.01, "cc": "US", "city": "New York"},
    "consent": ["analytics", "ads"],
    "x": 345,
    "y": 210,
    "button_id": "add_to_cart",
    "data": {},
    "ab_bucket": "B",
}


def test_segment_track_becomes_the_canonical_event():
    assert normalize_line(json.dumps(SEGMENT_TRACK)) == {
        "event_id": "msg-1",
        "event_type": "cart_add",
        "occurred_at": "2026-11-02T10:00:00.250000Z",
        "received_at": "2026-11-02T10:00:01.000000Z",
        "user_id": "u-9",
        "anonymous_id": "a-1",
        "session_id": None,
        "device": {"type": "mobile", "os": "iOS", "user_agent": SEGMENT_TRACK["context"]["userAgent"]},
        "context": {
            "ip": "198.51.100.7",
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "geo": {"lat": 52.52, "lon": 13.4, "country": "DE", "city": "Berlin"},
        },
        "page": {"url": "https://shop.example.com/product/p-7", "path": "/product/p-7", "referrer": None},
        "properties": {
            "product_id": "p-7",
            "price": "49.5",
            "quantity": "1",
            "tags": '["a","b"]',
            "event_name": "Product Added",
            "campaign_code": "BF26",  # an unknown top-level field is kept, not dropped
            "channel": "client",  # writeKey is not: it is a source credential
        },
        "consent": ["analytics", "personalization"],
        "source": {"kind": "segment", "sdk": "analytics.js", "version": "5.2.0"},
        "campaign": None,
        "schema_version": 3,
        "event_name": SEGMENT_TRACK["event"],
    }


def test_web_sdk_click_keeps_coordinates_button_and_unknown_fields_in_properties():
    event = normalize_line(json.dumps(WEB_SDK_CLICK))
    assert event == {
        "event_id": "e-1",
        "event_type": "click",
        "occurred_at": "2026-11-02T11:46:57.046000Z",
        "received_at": "2026-11-02T11:46:58.070000Z",
        "user_id": None,
        "anonymous_id": "a-2",
        "session_id": "s-2",
        "device": {"type": "desktop", "os": "Windows", "user_agent": WEB_SDK_CLICK["ua"]},
        "context": {
            "ip": "198.51.100.8",
            "locale": "en-US",
            "timezone": "America/New_York",
            "geo": {"lat": 40.71, "lon": -74.01, "country": "US", "city": "New York"},
        },
        "page": {
            "url": "https://shop.example.com/product/p-1?ref=x",
            "path": "/product/p-1",
            "referrer": "https://www.google.com/",
        },
        "properties": {"x": "345", "y": "210", "button_id": "add_to_cart", "ab_bucket": "B"},
        "consent": ["analytics"],
        "source": {"kind": "web_sdk", "sdk": "intentlake-web", "version": "2.3.1"},
        "campaign": None,
        "schema_version": 3,
        "event_name": "click",
    }


def test_segment_page_and_identify_calls_map_to_page_view_and_identify():
    page = {**SEGMENT_TRACK, "type": "page", "name": "Home", "properties": {"path": "/", "url": "https://s/"}}
    del page["event"]
    event = normalize_line(json.dumps(page))
    assert (event["event_type"], event["page"]["path"], event["properties"]["page_name"]) == (
        "page_view",
        "/",
        "Home",
    )
    identify = {"type": "identify", "messageId": "m-2", "userId": "u-1", "anonymousId": "a-1",
                "timestamp": "2026-11-02T10:00:00Z", "traits": {"plan": "member"}}  # fmt: skip
    event = normalize_line(json.dumps(identify))
    assert (event["event_type"], event["user_id"], event["properties"]) == (
        "identify",
        "u-1",
        {"trait.plan": "member"},
    )


def test_naive_timestamps_are_read_as_utc():
    msg = {**SEGMENT_TRACK, "timestamp": "2026-11-02T10:00:00"}
    assert normalize_line(json.dumps(msg))["occurred_at"] == "2026-11-02T10:00:00.000000Z"


@pytest.mark.parametrize(
    ("line", "reason", "detail_mentions"),
    [
        ('{"type": "track", "event": "Product', Reason.MALFORMED_JSON, "not valid JSON"),
        ("GET /favicon.ico HTTP/1.1", Reason.MALFORMED_JSON, "not valid JSON"),
        ("[1, 2]", Reason.NOT_AN_OBJECT, "list"),
        ('{"foo": "bar"}', Reason.UNKNOWN_SOURCE, "[foo]"),
        (
            json.dumps({**SEGMENT_TRACK, "anonymousId": None, "userId": None}),
            Reason.SCHEMA_VIOLATION,
            "anonymous_id",
        ),
        (json.dumps({**SEGMENT_TRACK, "messageId": None}), Reason.SCHEMA_VIOLATION, "event_id"),
        (json.dumps({**SEGMENT_TRACK, "event": ""}), Reason.SCHEMA_VIOLATION, "event: Segment track event must be"),
        (json.dumps({**SEGMENT_TRACK, "type": "group"}), Reason.SCHEMA_VIOLATION, "type: Segment call type"),
        (json.dumps({**SEGMENT_TRACK, "timestamp": "yesterday"}), Reason.BAD_TIMESTAMP, "timestamp"),
        (json.dumps({**WEB_SDK_CLICK, "ts": 12}), Reason.BAD_TIMESTAMP, "outside 2000-2100"),
        (json.dumps({**WEB_SDK_CLICK, "kind": "x" * 257}), Reason.SCHEMA_VIOLATION, "at most 256 characters"),
        (json.dumps({**WEB_SDK_CLICK, "geo": {"lat": 123.0}}), Reason.SCHEMA_VIOLATION, "context.geo.lat"),
        (json.dumps({**WEB_SDK_CLICK, "anon": 42}), Reason.SCHEMA_VIOLATION, "anonymous_id"),
        # wrong types where an adapter looks things up: quarantined, never an exception that stops the stream
        (
            json.dumps({**WEB_SDK_CLICK, "kind": ["click"]}),
            Reason.SCHEMA_VIOLATION,
            "kind: web SDK event kind must be non-empty text of at most 256 characters (got array)",
        ),
        (json.dumps({**SEGMENT_TRACK, "event": {"n": 1}}), Reason.SCHEMA_VIOLATION, "event: Segment track event"),
        (
            json.dumps({**SEGMENT_TRACK, "context": {**SEGMENT_TRACK["context"], "device": "phone"}}),
            Reason.SCHEMA_VIOLATION,
            "segment record has a field of an unexpected type",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_reason_that_names_the_problem(line, reason, detail_mentions):
    with pytest.raises(RejectedEvent) as caught:
        normalize_line(line)
    assert caught.value.reason == reason
    assert detail_mentions in caught.value.detail


def test_a_rejected_event_keeps_its_event_id_when_one_was_readable():
    with pytest.raises(RejectedEvent) as caught:
        normalize_line(json.dumps({**SEGMENT_TRACK, "event": None}))
    assert caught.value.event_id == "msg-1"
    with pytest.raises(RejectedEvent) as caught:  # also when an adapter trips over a field's type
        normalize_line(json.dumps({**SEGMENT_TRACK, "context": {"device": "phone"}}))
    assert caught.value.event_id == "msg-1"


def test_limits_reject_oversize_records_and_implausible_times():
    from spark_jobs.bronze.normalize import Limits

    limits = Limits(max_record_bytes=2_000, max_clock_skew_s=3600, max_event_age_s=86400)
    huge = json.dumps({**SEGMENT_TRACK, "properties": {"blob": "x" * 5000}})
    future = json.dumps({**SEGMENT_TRACK, "timestamp": "2026-11-02T12:00:02Z"})  # received 10:00:01
    stale = json.dumps({**SEGMENT_TRACK, "timestamp": "2026-10-31T10:00:00Z"})
    fine = json.dumps({**SEGMENT_TRACK, "timestamp": "2026-11-02T10:59:00Z"})  # within the skew
    for line, reason, mention in [
        (huge, Reason.OVERSIZE, "the limit is 2,000"),
        (future, Reason.FUTURE_TIMESTAMP, "2.0 h after received_at"),
        (stale, Reason.STALE_TIMESTAMP, "2.0 days before received_at"),
    ]:
        with pytest.raises(RejectedEvent) as caught:
            normalize_line(line, limits)
        assert caught.value.reason == reason and mention in caught.value.detail
    assert normalize_line(fine, limits)["event_id"] == "msg-1"


def test_undecodable_bytes_and_deep_nesting_are_quarantined_not_crashed_on():
    from spark_jobs.bronze.normalize import decode_record

    with pytest.raises(RejectedEvent) as caught:
        decode_record(json.dumps(SEGMENT_TRACK).replace("Berlin", "Berl\u00e9n").encode("latin-1"))
    assert caught.value.reason == Reason.INVALID_ENCODING and "0xe9" in caught.value.detail
    assert decode_record("caf\u00e9".encode()) == "caf\u00e9"
    deep = json.dumps({**SEGMENT_TRACK, "properties": {"p": json.loads("[" * 900 + "]" * 900)}})
    with pytest.raises(RejectedEvent) as caught:
        normalize_line(deep)
    assert caught.value.reason == Reason.SCHEMA_VIOLATION and "nest deeper than 32" in caught.value.detail
    with pytest.raises(RejectedEvent) as caught:
        normalize_line("[" * 100_000)
    assert caught.value.reason == Reason.MALFORMED_JSON


SECRETS = ("secret@example.com", "tok_123", "98765432123456789")
CANONICAL = {
    "event_id": "c-1", "event_type": "click", "occurred_at": "2026-11-02T10:00:00Z",
    "received_at": "2026-11-02T10:00:01Z", "anonymous_id": "a-9", "properties": {"product_id": "p-1"},
    "source": {"kind": "web_sdk", "sdk": "decision-api", "version": "1.0"}, "schema_version": 2,
}  # fmt: skip
CONTEXT = {"ip": None, "locale": None, "timezone": None, "geo": None}


def _detail(record: dict) -> str:
    ((_, outcome),) = normalize_records(json.dumps(record))
    assert isinstance(outcome, RejectedEvent), record
    return outcome.detail


@pytest.mark.parametrize(
    ("record", "detail"),
    [
        ({**CANONICAL, "anonymous_id": None}, "anonymous_id: expected string, got null"),
        ({k: v for k, v in CANONICAL.items() if k != "anonymous_id"}, "anonymous_id: required, missing"),
        ({**CANONICAL, "anonymous_id": "tok_123" * 40}, "anonymous_id: longer than 256 characters"),
        ({**CANONICAL, "properties": {"email": ["secret@example.com"]}},
         "properties.email: expected null or string, got array"),
        ({**CANONICAL, "context": {**CONTEXT, "ip": {"v": "secret@example.com"}}},
         "context.ip: expected null or string, got object"),
        ({**CANONICAL, "context": {**CONTEXT, "geo": {"lat": 98765432123456789, "lon": 1.0, "country": None,
                                                      "city": None}}}, "context.geo.lat: above the maximum 90"),
        ({**CANONICAL, "context": {**CONTEXT, "secret": "secret@example.com"}},
         "context.secret: not a field of the schema"),
        ({**CANONICAL, "consent": ["tok_123"]}, 'consent.0: not one of ["analytics", "marketing", "personalization"]'),
        ({**CANONICAL, "schema_version": "tok_123"},
         "schema_version: not a registered canonical schema version (registered: 1, 2, 3, 4; got string)"),
        ({**CANONICAL, "occurred_at": "secret@example.com"}, "occurred_at: not an ISO 8601 time"),
        ({**SEGMENT_TRACK, "timestamp": "secret@example.com"}, "timestamp: not an ISO 8601 time"),
        ({**SEGMENT_TRACK, "anonymousId": ["secret@example.com"], "userId": None},
         "anonymous_id: expected string, got array"),
        ({**SEGMENT_TRACK, "type": "tok_123"},
         "type: Segment call type is not one of track, page, screen, identify, alias (got string)"),
        ({**WEB_SDK_CLICK, "ts": 98765432123456789}, "ts: epoch milliseconds outside 2000-2100"),
        ({**WEB_SDK_CLICK, "kind": {"who": "secret@example.com"}}, "kind: web SDK event kind must be non-empty text"),
        ({**SEGMENT_TRACK, "context": {**SEGMENT_TRACK["context"], "device": "secret@example.com"}},
         "segment record has a field of an unexpected type (AttributeError)"),
    ],
)  # fmt: skip
def test_a_rejection_names_the_field_and_the_rule_and_never_the_value(record, detail):
    got = _detail(record)
    assert got.startswith(detail)
    assert not any(secret in got for secret in SECRETS)


def _paths(record: dict, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested record: ('context', 'ip') for record['context']['ip']."""
    paths = []
    for key, child in record.items():
        paths.append((*prefix, key))
        if isinstance(child, dict):
            paths += _paths(child, (*prefix, key))
    return paths


def _with(record: dict, path: tuple, value: object) -> dict:
    copy = json.loads(json.dumps(record))
    node = copy
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return copy


def test_no_field_of_any_source_format_copies_its_bad_value_into_the_detail():
    """Every field of every sample set, one at a time, to a secret string, a huge number, a list or an object
    holding a secret: whatever the rejection, its detail never holds the secret (the raw record keeps it)."""
    bad_values = ["secret@example.com", 98765432123456789, ["tok_123"], {"k": "secret@example.com"}]
    rejected = 0
    for sample in (CANONICAL, SEGMENT_TRACK, WEB_SDK_CLICK):
        for path in _paths(sample):
            for bad in bad_values:
                for raw, outcome in normalize_records(json.dumps(_with(sample, path, bad))):
                    if isinstance(outcome, RejectedEvent):
                        rejected += 1
                        assert not any(secret in outcome.detail for secret in SECRETS), (path, outcome.detail)
                        assert any(secret in raw for secret in SECRETS)  # the raw payload keeps it for replay
    assert rejected > 50
