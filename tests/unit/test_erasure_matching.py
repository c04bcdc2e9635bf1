"""Erasing user "42" removes the lines that name user "42", and no line that merely contains the text 42.

One pure function, `names_person`, decides for landing lines and quarantined payloads alike: lines bronze
can normalise are judged by their canonical identifiers, rejected JSON by the identifier fields of every
source format, and text that is not JSON by whole JSON strings only.
"""

from __future__ import annotations

import gzip
import json

import pytest

from spark_jobs.bronze.normalize import ADAPTERS, IDENTIFIER_FIELDS, normalize_line
from spark_jobs.erasure import names_person, scrub_landing

pytestmark = pytest.mark.unit

USER = frozenset({"42"})
T = "2026-11-02T10:00:00Z"


def segment(user_id: str | None, **fields) -> str:
    message = {"type": "track", "event": "Product Viewed", "messageId": "m-1", "anonymousId": "a-1",
               "userId": user_id, "timestamp": T, **fields}  # fmt: skip
    return json.dumps(message)


SNOWPLOW = {
    "event": "page_view", "event_id": "c6ef3124-0042", "collector_tstamp": "2026-11-02 10:00:05.000",
    "derived_tstamp": "2026-11-02 10:00:04.950", "domain_userid": "d-aa11", "network_userid": "n-bb22",
    "user_id": None, "page_url": "https://shop.example.com/product/p-42", "page_urlpath": "/product/p-42",
    "name_tracker": "sp", "v_tracker": "js-3.24.0",
}  # fmt: skip


def test_the_users_own_lines_name_them():
    assert names_person(segment("42"), USER)
    assert names_person(segment("42").encode(), USER)  # landing lines are read as bytes
    assert names_person(segment(None, anonymousId="42"), USER)


@pytest.mark.parametrize("other", ["420", "142", "4", "u-42", " 42"])
def test_other_users_whose_ids_contain_the_text_are_not_named(other):
    assert not names_person(segment(other), USER)


def test_event_ids_timestamps_and_urls_containing_42_name_nobody():
    line = segment("7", messageId="e-4217", timestamp="2026-11-02T10:42:42Z", sentAt=1793614242042,
                   properties={"product_id": "p-42", "price": 42, "url": "/p/42"})  # fmt: skip
    assert not names_person(line, USER)


def test_a_malformed_line_names_the_user_only_through_a_whole_json_string():
    assert not names_person('{"type":"track","userId":"7","messageId":"m-42","timestamp":"2026-11-02T10:42', USER)
    assert not names_person('{"type":"track","userId":"420","messageId":"m-1",', USER)
    assert names_person('{"type":"track","userId":"42","messageId":"m-1",', USER)
    assert names_person('{"type":"track","userId":"42" "messageId":"m-1"}', USER)


def test_a_non_json_line_names_the_user_only_by_the_token_with_its_quotes():
    assert names_person('userId="42" broken', USER)
    assert not names_person("userId=42 broken", USER)
    assert not names_person('note "420" and "say \\"42\\" now"', USER)  # inside another string: escaped quotes
    assert not names_person('"say \\"42" now', USER)  # the string is `say "42`
    assert names_person('odd "\\u0034\\u0032" escaped', USER)  # the same string, JSON-escaped
    assert names_person('name "J\\u00fcrgen" truncated', frozenset({"Jürgen"}))


def test_snowplow_lines_name_their_user_and_their_browser_cookies():
    assert names_person(json.dumps({**SNOWPLOW, "user_id": "42"}), USER)
    assert names_person(json.dumps({**SNOWPLOW, "domain_userid": "42"}), USER)
    assert names_person(json.dumps({**SNOWPLOW, "domain_userid": None, "network_userid": "42"}), USER)
    assert not names_person(json.dumps({**SNOWPLOW, "user_id": "420"}), USER)
    assert not names_person(json.dumps(SNOWPLOW), USER)  # event id, URL and times contain 42


def test_a_segment_alias_names_its_previous_id():
    alias = {"type": "alias", "messageId": "m-9", "previousId": "42", "userId": "u-new", "timestamp": T}
    assert names_person(json.dumps(alias), USER)
    assert not names_person(json.dumps({**alias, "previousId": "420"}), USER)


def test_a_segment_call_with_only_a_login_names_its_derived_anonymous_id():
    assert names_person(segment("42", anonymousId=None), frozenset({"uid:42"}))


def test_rejected_json_is_judged_by_the_identifier_fields_of_every_format():
    bad_kind = {"sdk": "web", "kind": "teleport", "eid": "e-42", "ts": 1793620017046, "anon": "a-1", "uid": "42"}
    assert names_person(json.dumps(bad_kind), USER)  # schema violation: unknown web SDK kind
    assert not names_person(json.dumps({**bad_kind, "uid": "420"}), USER)
    assert names_person(segment(42), USER)  # a number where text belongs
    assert not names_person(segment(420), USER)
    assert names_person(json.dumps({"unknown": "format", "user_id": "42"}), USER)  # unknown source
    assert not names_person(json.dumps({"unknown": "format", "note": "42"}), USER)  # not an identifier field
    assert names_person(json.dumps({"batch": "not a list", "items": [{"userId": "42"}]}), USER)  # nested
    assert not names_person(json.dumps(["42"]), USER)  # JSON, but no identifier field


def test_a_segment_batch_names_the_user_when_any_of_its_messages_does():
    envelope = {"batch": [json.loads(segment("7")), json.loads(segment("42", messageId="m-2"))], "sentAt": T}
    assert names_person(json.dumps(envelope), USER)
    envelope["batch"].pop()
    assert not names_person(json.dumps(envelope), USER)


def test_stale_or_invalid_utf8_lines_still_name_their_user():
    assert names_person(segment("42", timestamp="2001-01-01T00:00:00Z", receivedAt=T), USER)  # stale
    assert names_person(segment("42").encode()[:-1] + b',"x":"\xff"}', USER)
    assert not names_person(b"", USER) and not names_person(segment("42"), frozenset())


SAMPLES = {
    "canonical": {"event_id": "e-1", "event_type": "click", "occurred_at": T, "received_at": T, "schema_version": 2,
                  "source": {"kind": "web_sdk", "sdk": None, "version": None}},
    "segment": {"type": "alias", "messageId": "m-1", "timestamp": T},
    "web_sdk": {"sdk": "web", "kind": "pageview", "eid": "e-1", "ts": 1793620017046},
    "mobile_sdk": {"event_name": "touch", "event_uuid": "u-1", "client_ts": 1793620017046},
    "server_log": {"log_type": "access", "time": T, "request_id": "r-1", "method": "GET", "status": 200, "path": "/"},
    "snowplow": {k: v for k, v in SNOWPLOW.items() if not k.endswith("userid")},
    "iot_beacon": {"reading_id": "r-1", "seen_at": T, "beacon": {"uuid": "b", "major": 1, "minor": 2}},
}  # fmt: skip


@pytest.mark.parametrize(
    ("source", "column", "field"),
    [(s, c, f) for s, columns in IDENTIFIER_FIELDS.items() for c, fields in columns.items() for f in fields],
)
def test_identifier_fields_are_where_each_adapter_reads_its_identifiers(source, column, field):
    assert set(IDENTIFIER_FIELDS) == {"canonical", *ADAPTERS}  # every format has its entry
    others = {f: f"other-{f}" for fields in IDENTIFIER_FIELDS[source].values() for f in fields}
    earlier = IDENTIFIER_FIELDS[source][column][: IDENTIFIER_FIELDS[source][column].index(field)]
    event = normalize_line(json.dumps({**SAMPLES[source], **others, **dict.fromkeys(earlier), field: "marker"}))
    found = event["properties"]["previous_id"] if column == "previous_id" else event[column]
    assert (event["source"]["kind"] == source or source == "canonical") and found == "marker"


def test_scrub_landing_removes_exactly_the_users_lines_from_plain_and_gzip_files(settings):
    ours, theirs = segment("42") + "\n", segment("420", messageId="e-4217") + "\n"
    landing = settings.landing
    landing.mkdir(parents=True)
    (landing / "a.ndjson").write_text(theirs + ours + theirs)
    (landing / "b.jsonl.gz").write_bytes(gzip.compress((ours + theirs).encode()))
    (landing / "notes.txt").write_text(ours)  # not a landing data file: left alone
    assert scrub_landing(settings, USER) == 2
    assert (landing / "a.ndjson").read_text() == theirs + theirs
    assert gzip.decompress((landing / "b.jsonl.gz").read_bytes()).decode() == theirs
    assert (landing / "notes.txt").read_text() == ours
    assert sorted(p.name for p in landing.iterdir()) == ["a.ndjson", "b.jsonl.gz", "notes.txt"]
