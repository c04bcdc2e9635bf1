"""The collector (spark_jobs/serving/collector.py) in front of the landing zone: every Segment call type, the
other formats on /v1/events, write keys, Segment's size limits, per-event reasons for a refused request (and
nothing of it written), a full disk answered 503 with nothing acknowledged, and what it writes landing in
bronze.events through bronze's own stream. The Kafka sink, and a collector killed with kill -9 during a
burst, are in tests/integration/test_kafka.py beside the module's broker.
"""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from spark_jobs.bronze.normalize import detect_source
from spark_jobs.serving.collector import LandingSink, create_app
from spark_jobs.simulate import simulate

pytestmark = pytest.mark.integration
WRITE_KEY = "wk-test-0123456789"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}
NOW = "2026-12-05T10:00:00Z"


def _message(kind: str, n: int, **extra) -> dict:
    base = {"messageId": f"m-{kind}-{n}", "anonymousId": f"anon-{n % 3}", "timestamp": NOW,
            "context": {"page": {"url": "https://shop.example/p/1", "path": "/p/1"}}}  # fmt: skip
    names = {"track": {"event": "Product Viewed", "properties": {"product_id": "sku-1"}},
             "page": {"name": "Home"}, "screen": {"name": "Cart"},
             "identify": {"userId": f"user-{n}", "traits": {"email": f"u{n}@example.com"}},
             "alias": {"userId": f"user-{n}", "previousId": f"anon-{n % 3}"}}  # fmt: skip
    return {**base, **names[kind], **extra}


@pytest.fixture
def collector(settings):
    settings = replace(settings, collector_write_keys=WRITE_KEY, max_event_age="3650 days")
    with TestClient(create_app(settings)) as client:
        yield client, settings


def _landed(settings) -> list[dict]:
    lines = []
    for path in sorted(settings.landing.glob("collector-*.ndjson")):
        lines += [json.loads(line) for line in path.read_text().splitlines()]
    assert not list(settings.landing.glob(".*.tmp"))  # nothing half-written left behind
    return lines


def test_every_segment_call_type_and_the_batch_are_accepted_and_written_whole(collector):
    client, settings = collector
    for n, kind in enumerate(("track", "page", "screen", "identify", "alias")):
        answer = client.post(f"/v1/{kind}", json=_message(kind, n), headers=AUTH)
        assert answer.status_code == 200 and answer.json() == {"success": True, "accepted": 1}, answer.text
    batch = {"batch": [dict(_message("track", 10 + i), type="track") for i in range(3)],
             "context": {"library": {"name": "analytics.js"}}, "sentAt": NOW}  # fmt: skip
    assert client.post("/v1/batch", json=batch, headers=AUTH).json() == {"success": True, "accepted": 3}
    # the write key may come in the body, as Segment's libraries for some platforms send it; never stored
    body_key = dict(_message("track", 20), writeKey=WRITE_KEY)
    assert client.post("/v1/track", json=body_key).status_code == 200

    landed = _landed(settings)
    assert [m["messageId"] for m in landed] == [
        "m-track-0", "m-page-1", "m-screen-2", "m-identify-3", "m-alias-4", "m-track-10", "m-track-11",
        "m-track-12", "m-track-20"]  # fmt: skip
    assert [m["type"] for m in landed[:5]] == ["track", "page", "screen", "identify", "alias"]  # from the path
    assert landed[6]["context"] == {
        "page": {"url": "https://shop.example/p/1", "path": "/p/1"},
        "library": {"name": "analytics.js"},
    }  # the envelope's context, merged
    assert all("writeKey" not in m for m in landed)
    assert client.get("/healthz").json()["accepted"] == 9
    # a message without a messageId gets one, as Segment's API assigns it
    anonymous = {k: v for k, v in _message("page", 30).items() if k != "messageId"}
    assert client.post("/v1/page", json=anonymous, headers=AUTH).status_code == 200
    assert _landed(settings)[-1]["messageId"].startswith("collector-")


def test_a_request_with_a_bad_event_is_refused_whole_naming_each_one(collector):
    client, settings = collector
    bad_time = dict(_message("track", 1), timestamp="yesterday")
    no_ids = {k: v for k, v in _message("track", 2).items() if k != "anonymousId"}
    answer = client.post("/v1/batch", json={"batch": [_message("track", 0) | {"type": "track"},
                                                      bad_time | {"type": "track"}, no_ids | {"type": "track"}]},
                         headers=AUTH)  # fmt: skip
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert [(e["index"], e["reason"]) for e in errors] == [(1, "bad_timestamp"), (2, "schema_violation")]
    assert "timestamp" in errors[0]["detail"]
    assert "yesterday" not in answer.text  # the reason names the field, never its value
    wrong_type = client.post("/v1/page", json=dict(_message("page", 3), type="track"), headers=AUTH)
    assert wrong_type.status_code == 400 and "a /v1/page call carries type 'page'" in wrong_type.text
    not_json = client.post("/v1/track", content=b"{not json", headers=AUTH)
    assert not_json.status_code == 400 and not_json.json()["errors"][0]["reason"] == "malformed_json"
    assert _landed(settings) == []  # nothing of a refused request reaches the stream


def test_segment_size_limits_and_write_keys(collector):
    client, settings = collector
    big = dict(_message("track", 1), properties={"blob": "x" * 33_000})
    answer = client.post("/v1/track", json=big, headers=AUTH)
    assert answer.status_code == 400 and answer.json()["errors"][0]["reason"] == "oversize_record"
    huge = {"batch": [dict(_message("track", i), type="track", properties={"pad": "y" * 20_000}) for i in range(30)]}
    too_big = client.post("/v1/batch", json=huge, headers=AUTH)
    assert too_big.status_code == 413 and "the limit is 512,000" in too_big.text
    assert client.post("/v1/track", json=_message("track", 2)).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"nope:").decode()}
    assert client.post("/v1/track", json=_message("track", 2), headers=wrong).status_code == 401
    assert _landed(settings) == []


def test_other_formats_on_v1_events_go_through_bronzes_adapters(collector, tmp_path):
    client, settings = collector
    outbox = tmp_path / "outbox"
    simulate(outbox, tmp_path / "truth", events=300, seed=5, malformed_rate=0.0, realistic=True, lines_per_file=100)
    lines = [line for path in sorted(outbox.glob("*.ndjson")) for line in path.read_text().splitlines()]
    accepted = 0
    for start in range(0, len(lines), 50):
        answer = client.post("/v1/events", content="\n".join(lines[start : start + 50]).encode(), headers=AUTH)
        assert answer.status_code == 200, answer.text
        accepted += answer.json()["accepted"]
    assert accepted >= len(lines)  # Segment batch envelopes among them count one per message
    kinds = {detect_source(m) for m in _landed(settings)}
    assert {"segment", "snowplow", "web_sdk"} <= kinds  # the realistic mix, as it was sent
    array = client.post("/v1/events", json=[_message("track", 1) | {"type": "track"}], headers=AUTH)
    assert array.json() == {"success": True, "accepted": 1}


def test_a_full_disk_is_answered_503_and_nothing_is_acknowledged(settings, tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    try:
        settings = replace(settings, collector_write_keys=WRITE_KEY, max_event_age="3650 days")
        with TestClient(create_app(settings, LandingSink(disk))) as client:
            answers = [client.post("/v1/batch", headers=AUTH, json={"batch": [
                dict(_message("track", 100 * r + i), type="track", properties={"pad": "z" * 1_000}) for i in range(20)
            ]}) for r in range(5)]  # fmt: skip
        codes = [a.status_code for a in answers]
        assert codes[0] == 200 and 503 in codes, codes
        refused = next(a for a in answers if a.status_code == 503)
        assert "landing zone is full" in refused.text and refused.headers["Retry-After"] == "1"
        stored = [json.loads(line)["messageId"] for p in disk.glob("collector-*.ndjson") for line in
                  p.read_text().splitlines()]  # fmt: skip
        acknowledged = sum(a.json()["accepted"] for a in answers if a.status_code == 200)
        assert len(stored) == acknowledged and not list(disk.glob(".*.tmp"))  # every ack is on disk, no debris
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_what_the_collector_wrote_lands_in_bronze_once_and_exposures_stay_out_of_sessions(spark, collector):
    from spark_jobs.bronze import job as bronze
    from spark_jobs.serving.decisions import DecisionRequest, exposure_event
    from spark_jobs.silver import job as silver
    from tests.helpers import table

    client, settings = collector
    kinds = ("track", "page", "screen", "identify", "alias")
    for n in range(10):
        assert client.post(f"/v1/{kinds[n % 5]}", json=_message(kinds[n % 5], n), headers=AUTH).status_code == 200
    # what the decision API logs, and the click on its CTA that the page sends back with the decision id
    decision = {
        "decision_id": "d-0001",
        "channel": "web",
        "segment": "High Intent",
        "intent_score": 85.0,
        "model_version": "weighted-v1",
        "personalized": True,
        "rules_version": "abc",
        "content": {"rule": "r"},
    }
    at = datetime(2026, 12, 5, 10, 0, 1, tzinfo=UTC)
    exposure = exposure_event(decision, DecisionRequest(anonymous_id="anon-0"), at)
    assert client.post("/v1/events", json=exposure, headers=AUTH).status_code == 200
    click = _message("track", 99, event="CTA Clicked", timestamp="2026-12-05T10:00:03Z",
                     properties={"decision_id": "d-0001", "cta": "Complete your order"})  # fmt: skip
    assert client.post("/v1/track", json=click, headers=AUTH).status_code == 200

    bronze.run(spark, settings)
    events = table(spark, settings, "bronze.events")
    assert events.count() == 12 and table(spark, settings, "bronze.quarantine").count() == 0
    expected = {f"m-{kinds[n % 5]}-{n}" for n in range(10)} | {"d-0001", "m-track-99"}
    assert {r.event_id for r in events.select("event_id").collect()} == expected
    shown = events.where("event_type = 'exposure'").first()
    assert (shown.event_id, shown.properties["rule"], shown.source.kind) == ("d-0001", "r", "api")
    assert events.where("event_id = 'm-track-99'").first().properties["decision_id"] == "d-0001"

    silver.run(spark, settings)
    sessions = table(spark, settings, "silver.sessions").where("anonymous_id = 'anon-0'")
    behaviour = events.where("anonymous_id = 'anon-0' AND event_type != 'exposure'").count()
    assert sessions.agg({"event_count": "sum"}).first()[0] == behaviour  # the exposure is in no session
