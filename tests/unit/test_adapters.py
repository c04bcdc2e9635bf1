"""Golden tests: a realistic payload of each further source format -> the canonical event."""

from __future__ import annotations

import json

import pytest

from spark_jobs.bronze.normalize import (
    SNOWPLOW_WEB_PAGE_COLUMN,
    Reason,
    RejectedEvent,
    normalize_line,
    normalize_records,
)

pytestmark = pytest.mark.unit

NO_DEVICE = {"type": None, "os": None, "user_agent": None}


def test_mobile_sdk_touch_with_touch_coordinates():
    payload = {
        "platform": "iOS", "sdk_version": "4.2.0", "app_version": "7.1.3", "event_name": "touch",
        "event_uuid": "9b1c7c0e-0001", "client_ts": "2026-11-02T08:15:30.120Z", "server_ts": "2026-11-02T08:15:31Z",
        "device_id": "dev-42", "user_id": None, "session_uuid": "sess-7", "touch_coordinates": {"x": 187, "y": 402},
        "target_id": "buy_button", "screen": "ProductDetail", "os_version": "18.2", "device_model": "iPhone16,2",
        "locale": "en-GB", "timezone": "Europe/London", "location": {"lat": 51.5, "lon": -0.12, "country": "GB"},
        "attributes": {"product_id": "p-7"}, "consent": ["analytics"], "battery": 0.61,
    }  # fmt: skip
    assert normalize_line(json.dumps(payload)) == {
        "event_id": "9b1c7c0e-0001", "event_type": "click",
        "occurred_at": "2026-11-02T08:15:30.120000Z", "received_at": "2026-11-02T08:15:31.000000Z",
        "user_id": None, "anonymous_id": "dev-42", "session_id": "sess-7",
        "device": {"type": "mobile", "os": "iOS", "user_agent": None},
        "context": {"ip": None, "locale": "en-GB", "timezone": "Europe/London",
                    "geo": {"lat": 51.5, "lon": -0.12, "country": "GB", "city": None}},
        "page": {"url": None, "path": "app://ProductDetail", "referrer": None},
        "properties": {"product_id": "p-7", "x": "187", "y": "402", "button_id": "buy_button", "app_version": "7.1.3",
                       "os_version": "18.2", "device_model": "iPhone16,2", "battery": "0.61"},
        "consent": ["analytics"],
        "source": {"kind": "mobile_sdk", "sdk": "ios-sdk", "version": "4.2.0"}, "campaign": None,
        "schema_version": 3, "event_name": "touch",
    }  # fmt: skip


def test_mobile_sdk_accepts_touch_coordinates_as_a_pair():
    payload = {"event_name": "touch", "event_uuid": "u-2", "client_ts": 1793620017046, "device_id": "d",
               "touch_coordinates": [10, 20]}  # fmt: skip
    event = normalize_line(json.dumps(payload))
    assert (event["properties"]["x"], event["properties"]["y"]) == ("10", "20")


def test_server_access_log_product_page():
    entry = {
        "log_type": "access", "time": "2026-11-02T09:00:00.500+01:00", "request_id": "req-123",
        "client_ip": "203.0.113.9", "method": "GET", "host": "shop.example.com", "path": "/product/p-9?color=red",
        "status": 200, "bytes_sent": 5120, "duration_ms": 38, "referrer": "https://www.google.com/",
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) Safari/605.1.15",
        "anonymous_id": "a-77", "user_id": "u-5", "upstream": "app-3",
    }  # fmt: skip
    assert normalize_line(json.dumps(entry)) == {
        "event_id": "req-123", "event_type": "product_view",
        "occurred_at": "2026-11-02T08:00:00.500000Z", "received_at": "2026-11-02T08:00:00.500000Z",
        "user_id": "u-5", "anonymous_id": "a-77", "session_id": None,
        "device": {"type": "desktop", "os": "macOS", "user_agent": entry["user_agent"]},
        "context": {"ip": "203.0.113.9", "locale": None, "timezone": None, "geo": None},
        "page": {"url": "https://shop.example.com/product/p-9?color=red", "path": "/product/p-9",
                 "referrer": "https://www.google.com/"},
        "properties": {"status": "200", "bytes_sent": "5120", "duration_ms": "38", "upstream": "app-3",
                       "product_id": "p-9"},
        "consent": [], "source": {"kind": "server_log", "sdk": None, "version": None}, "campaign": None,
        "schema_version": 3, "event_name": None,
    }  # fmt: skip


def test_server_log_non_page_requests_are_rejected_with_the_reason():
    entry = {"log_type": "access", "time": "2026-11-02T09:00:00Z", "request_id": "r", "method": "POST",
             "path": "/api/cart", "status": 201, "anonymous_id": "a"}  # fmt: skip
    with pytest.raises(RejectedEvent, match="only GET requests answered with a status from 200 to 399"):
        normalize_line(json.dumps(entry))


SNOWPLOW_PING = {
    "app_id": "shop", "platform": "web", "collector_tstamp": "2026-11-02 10:00:05.000",
    "dvce_created_tstamp": "2026-11-02 10:00:04.900", "derived_tstamp": "2026-11-02 10:00:04.950",
    "event": "page_ping", "event_id": "c6ef3124-b53a-4b13-a233-0088f79dcbcb", "name_tracker": "sp",
    "v_tracker": "js-3.24.0", "user_id": None, "user_ipaddress": "198.51.100.23",
    "domain_userid": "d-aa11", "domain_sessionidx": 3, "domain_sessionid": "ds-bb22", "network_userid": "n-cc33",
    "geo_country": "FR", "geo_city": "Paris", "geo_latitude": 48.86, "geo_longitude": 2.35,
    "geo_timezone": "Europe/Paris", "page_url": "https://shop.example.com/category/shoes",
    "page_urlpath": "/category/shoes", "page_referrer": "", "br_lang": "fr-FR",
    "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/142.0.0.0 Safari/537.36",
    "dvce_ismobile": False, "os_timezone": "Europe/Paris", "pp_yoffset_max": 1800, "doc_height": 2400,
}  # fmt: skip


def test_snowplow_page_ping_becomes_a_scroll_with_its_depth():
    assert normalize_line(json.dumps(SNOWPLOW_PING)) == {
        "event_id": "c6ef3124-b53a-4b13-a233-0088f79dcbcb", "event_type": "scroll",
        "occurred_at": "2026-11-02T10:00:04.950000Z", "received_at": "2026-11-02T10:00:05.000000Z",
        "user_id": None, "anonymous_id": "d-aa11", "session_id": "ds-bb22",
        "device": {"type": "desktop", "os": "Windows", "user_agent": SNOWPLOW_PING["useragent"]},
        "context": {"ip": "198.51.100.23", "locale": "fr-FR", "timezone": "Europe/Paris",
                    "geo": {"lat": 48.86, "lon": 2.35, "country": "FR", "city": "Paris"}},
        "page": {"url": "https://shop.example.com/category/shoes", "path": "/category/shoes", "referrer": None},
        "properties": {"scroll_depth": "75", "session_index": "3", "app_id": "shop"},
        "consent": [], "source": {"kind": "snowplow", "sdk": "sp", "version": "js-3.24.0"}, "campaign": None,
        "schema_version": 3, "event_name": "page_ping",
    }  # fmt: skip


def test_snowplow_structured_add_to_cart_and_unknown_actions():
    cart = {**SNOWPLOW_PING, "event": "struct", "se_category": "ecommerce", "se_action": "add-to-cart",
            "se_label": "p-3", "se_value": 19.9}  # fmt: skip
    event = normalize_line(json.dumps(cart))
    assert event["event_type"] == "cart_add" and event["properties"]["se_label"] == "p-3"
    share = normalize_line(json.dumps({**cart, "se_action": "share"}))  # not mapped: kept as a custom event
    assert (share["event_type"], share["event_name"]) == ("custom", "share")
    assert share["properties"]["se_category"] == "ecommerce"


PAGE_VIEW_ID = "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"


def test_snowplow_page_views_are_keyed_by_their_web_page_id_and_pings_point_to_it():
    """The web_page context's id: a page view sent twice with different timestamps (and event ids) gets one
    event id, so bronze stores it once; its pings carry the id of their page. Both context forms are read."""
    view = {**SNOWPLOW_PING, "event": "page_view", "event_id": "e-first", "pp_yoffset_max": None,
            SNOWPLOW_WEB_PAGE_COLUMN: [{"id": PAGE_VIEW_ID}]}  # fmt: skip
    resent = {**view, "event_id": "e-again", "derived_tstamp": "2026-11-02 10:00:09.000"}
    first, again = normalize_line(json.dumps(view)), normalize_line(json.dumps(resent))
    assert first["event_id"] == again["event_id"] == PAGE_VIEW_ID
    assert first["occurred_at"] != again["occurred_at"]
    assert first["properties"]["snowplow_event_id"] == "e-first" and first["properties"]["page_view_id"] == PAGE_VIEW_ID
    enriched = {"schema": "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-0", "data": [
        {"schema": "iglu:com.snowplowanalytics.snowplow/ua_parser_context/jsonschema/1-0-0", "data": {"id": "no"}},
        {"schema": "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-0-0", "data": {"id": PAGE_VIEW_ID}},
    ]}  # fmt: skip
    ping = normalize_line(json.dumps({**SNOWPLOW_PING, "contexts": json.dumps(enriched)}))
    assert ping["event_id"] == SNOWPLOW_PING["event_id"] and ping["properties"]["page_view_id"] == PAGE_VIEW_ID
    # without the context (or with an id no event id could be), nothing changes
    assert "page_view_id" not in normalize_line(json.dumps(SNOWPLOW_PING))["properties"]
    odd = normalize_line(json.dumps({**view, SNOWPLOW_WEB_PAGE_COLUMN: [{"id": "x" * 129}]}))
    assert odd["event_id"] == "e-first" and "page_view_id" not in odd["properties"]
    # other kinds keep their own id even when the tracker attached the page's context
    cart = {**view, "event": "struct", "se_action": "add-to-cart"}
    assert normalize_line(json.dumps(cart))["event_id"] == "e-first"
    assert "page_view_id" not in normalize_line(json.dumps(cart))["properties"]


def test_segment_batch_envelope_yields_one_record_per_message_with_shared_context():
    envelope = {
        "batch": [
            {"type": "track", "event": "Product Viewed", "messageId": "m-1", "anonymousId": "a-1",
             "timestamp": "2026-11-02T10:00:00Z", "properties": {"product_id": "p-1"}},
            {"type": "page", "name": "Home", "messageId": "m-2", "anonymousId": "a-1",
             "timestamp": "2026-11-02T10:00:05Z", "context": {"locale": "de-DE"}},
            {"type": "track", "event": "Coupon Applied", "messageId": "m-3", "anonymousId": "a-1",
             "timestamp": "not a time"},
        ],
        "sentAt": "2026-11-02T10:00:10Z", "receivedAt": "2026-11-02T10:00:11Z",
        "context": {"library": {"name": "analytics-node", "version": "2.1.0"}, "locale": "en-US"},
    }  # fmt: skip
    records = normalize_records(json.dumps(envelope))
    assert [type(o).__name__ for _, o in records] == ["dict", "dict", "RejectedEvent"]
    first, second, third = (o for _, o in records)
    assert (first["event_id"], first["received_at"], first["source"]["sdk"]) == (
        "m-1",
        "2026-11-02T10:00:11.000000Z",
        "analytics-node",
    )
    assert second["context"]["locale"] == "de-DE"  # a message's own context wins over the envelope's
    assert third.reason == Reason.BAD_TIMESTAMP
    assert json.loads(records[2][0])["messageId"] == "m-3"  # each message keeps its own raw JSON for replay


def test_an_empty_or_malformed_batch_is_one_rejected_record():
    ((_, outcome),) = normalize_records('{"batch": []}')
    assert isinstance(outcome, RejectedEvent) and "non-empty list" in outcome.detail
