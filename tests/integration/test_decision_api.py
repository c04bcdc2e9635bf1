"""The decision API (spark_jobs/serving/api.py) on a real Redis: the seeds' calls, consent, unknown persons,
the seeds' pizza example, keys, bad parameters with their reasons, a store that goes down and comes back, and
`intentlake serve api` as a real server on loopback.

Persons are put into the store through the store's own writer (`online_store._Writer`, what the executors
run), so the API reads exactly the layout the materialiser writes (tests/spark/test_online_store.py feeds
it from Delta tables).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from spark_jobs.serving.api import create_app
from spark_jobs.serving.online_store import _Writer
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.integration
KEY = "test-api-key-0123456789"
NEAR = {"lat": 48.8638, "lon": 2.3370}  # the Palais-Royal, 0.35 km from the configured trattoria
FAR = {"lat": 43.2965, "lon": 5.3698}  # Marseille


def _put(settings, person: str, ids: dict[str, str], **groups: dict) -> None:
    """Write a person's groups and ids as the materialiser does (version 1 each)."""
    rows = [SimpleNamespace(key=f"p:{person}", grp=group, fields=fields, _commit_version=1, _change_type="insert")
            for group, fields in groups.items()]  # fmt: skip
    rows += [SimpleNamespace(key=f"id:{kind}:{value}", grp="identity", fields={"person_id": person},
                             _commit_version=1, _change_type="insert") for kind, value in ids.items()]  # fmt: skip
    writer = _Writer(settings.redis_url, settings.redis_prefix, 3600, False, ())
    assert next(writer(rows)) == (len(rows), 0)


SEGMENT = {"segment": "High Intent", "intent_score": "85.0", "contributions": json.dumps({"cart_add": 45.0,
           "product_views": 40.0}), "model_version": "weighted-v1", "session_id": "s-1", "sessions": "4"}  # fmt: skip


@pytest.fixture
def api(online_settings):
    settings = replace(online_settings, api_keys=KEY)
    _put(settings, "p-1", {"user_id": "u-1", "anonymous_id": "a-1"}, segment=SEGMENT,
         consent={"consent_personalization": "1", "consent_marketing": "0"},
         send={"best_local_hour": "19", "timezone": "Europe/Paris"})  # fmt: skip
    _put(settings, "p-2", {"anonymous_id": "a-2"}, segment=dict(SEGMENT, segment="Price Sensitive"),
         consent={"consent_personalization": "0"})  # fmt: skip
    with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as client:
        yield SimpleNamespace(client=client, settings=settings)


def test_the_seeds_get_answers_from_the_store_only_with_the_persons_consent(api):
    known = api.client.get("/api/content", params={"user_id": "u-1", "time": "14:00", "intent_score": 10}).json()
    assert known["personalized"] and known["basis"] == "store and request" and known["person_id"] == "p-1"
    assert (known["segment"], known["intent_score"]) == ("High Intent", 85.0)  # the store's, not the page's
    assert known["contributions"] == {"cart_add": 45.0, "product_views": 40.0}
    assert known["content"]["rule"] == "high-intent-offer" and known["content"]["cta"]
    assert known["decision_id"].startswith("d-") and not known["degraded"]
    assert known["context"]["timezone"] == "Europe/Paris"  # from the store: the request sent no zone
    # the anonymous id finds the same person
    assert api.client.post("/api/personalize", json={"anonymous_id": "a-1"}).json()["person_id"] == "p-1"

    refused = api.client.get("/api/content", params={"anonymous_id": "a-2"}).json()
    assert not refused["personalized"] and refused["basis"] == "request only: no personalization consent"
    assert refused["segment"] is None and refused["person_id"] is None and refused["content"]["rule"] == "default-web"

    unknown = api.client.get("/api/content", params={"user_id": "nobody", "intent_score": 55}).json()
    assert unknown["basis"] == "request only: the store knows no such person"
    assert (unknown["segment"], unknown["intent_score"], unknown["content"]["rule"]) == (None, 55.0, "default-web")
    ids = {api.client.get("/api/content", params={"user_id": "u-1"}).json()["decision_id"] for _ in range(5)}
    assert len(ids) == 5  # every decision is named anew


def test_the_seeds_pizza_search_gets_a_local_offer_in_the_evening_nearby_and_a_snack_at_night_far_away(api):
    def pick(**context):
        body = {"anonymous_id": "a-9", "page": {"url": "https://shop.example/search?q=best+pizza"}, "context": context}
        answer = api.client.post("/api/personalize", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    evening = pick(local_time="2026-12-05T19:05:00+01:00", geo=NEAR)
    assert evening["content"]["rule"] == "local-pizza-offer" and evening["context"]["search_query"] == "best pizza"
    night = pick(local_time="2026-12-06T03:00:00+01:00", geo=FAR, device={"type": "mobile"})
    assert night["content"]["rule"] == "late-night-snack" and night["context"]["device_type"] == "mobile"
    noon = pick(local_time="12:00", geo=NEAR)
    assert noon["content"]["rule"] == "default-web"
    # the seeds' GET with a search and a position: the same rules
    got = api.client.get("/api/content", params={"user_id": "x", "time": "19:30", "q": "Pizza", **NEAR}).json()
    assert got["content"]["rule"] == "local-pizza-offer"


@pytest.mark.parametrize(("call", "status", "reason"), [
    (("get", {"user_id": "u-1", "time": "25:00"}), 400, "local_time '25:00'"),
    (("get", {"user_id": "u-1", "channel": "email"}), 400, "channel 'email': use one of ['web', 'app']"),
    (("get", {"time": "19:00"}), 400, "user_id or anonymous_id is required"),
    (("get", {"user_id": "u-1", "lat": 48.0}), 400, "lat and lon go together"),
    (("get", {"user_id": "u-1", "timezone": "Mars/Olympus"}), 400, "'Mars/Olympus' is not an IANA zone"),
    (("get", {"user_id": "u-1", "intent_score": 140}), 422, "intent_score"),
    (("post", {"anonymous_id": "a", "context": {"geo": {"lat": 100, "lon": 2}}}), 422, "lat"),
    (("post", {"anonymous_id": "a", "colour": "red"}), 422, "colour"),
])  # fmt: skip
def test_a_bad_parameter_gets_a_4xx_naming_it(api, call, status, reason):
    method, values = call
    answer = (api.client.get("/api/content", params=values) if method == "get"
              else api.client.post("/api/personalize", json=values))  # fmt: skip
    assert answer.status_code == status and reason in answer.text, answer.text


def test_every_api_call_needs_a_key(api):
    call = api.client.get  # sent with the fixture's key unless a header here replaces it
    assert call("/api/content", params={"user_id": "u-1"}, headers={"X-API-Key": ""}).status_code == 401
    assert call("/api/content", params={"user_id": "u-1"}, headers={"X-API-Key": "wrong"}).status_code == 401
    bearer = call(
        "/api/content", params={"user_id": "u-1"}, headers={"X-API-Key": "", "Authorization": f"Bearer {KEY}"}
    )
    assert bearer.status_code == 200 and bearer.json()["personalized"]
    assert call("/healthz", headers={"X-API-Key": ""}).json()["store"] == "up"  # no key, nothing personal
    assert call("/docs").status_code == 200 and "/api/personalize" in call("/openapi.json").json()["paths"]


def test_a_store_that_goes_down_gives_degraded_answers_fast_and_the_api_recovers(api, redis_url):
    redis_url.stop()
    try:
        started = time.monotonic()
        answers = [api.client.get("/api/content", params={"user_id": "u-1", "time": "19:00"}) for _ in range(50)]
        elapsed = time.monotonic() - started
        assert {a.status_code for a in answers} == {200}
        assert all(a.json()["degraded"] and a.json()["content"]["rule"] == "default-web" for a in answers)
        assert answers[0].json()["basis"] == "request only: online store unavailable"
        assert elapsed < 10  # not 50 store timeouts in a row: the breaker answers without waiting
        assert api.client.get("/healthz").json()["store"] == "down"
    finally:
        redis_url.start()
    time.sleep(1.2)  # the breaker's second
    _put(api.settings, "p-1", {"user_id": "u-1"}, segment=SEGMENT, consent={"consent_personalization": "1"})
    back = api.client.get("/api/content", params={"user_id": "u-1"}).json()
    assert not back["degraded"] and back["segment"] == "High Intent"


def test_intentlake_serve_api_serves_on_loopback_until_stopped(api, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = {"INTENTLAKE_REDIS_URL": api.settings.redis_url, "INTENTLAKE_REDIS_PREFIX": api.settings.redis_prefix}
    env = {**os.environ, "INTENTLAKE_LAKEHOUSE": str(tmp_path / "lakehouse"), **store}
    env.pop("INTENTLAKE_API_KEYS", None)  # a key is generated into the lakehouse's _secrets
    server = subprocess.Popen([sys.executable, "-m", "spark_jobs.cli", "serve", "api", "--port", str(port)], env=env,
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        banner = server.stdout.readline()
        assert f"http://127.0.0.1:{port}" in banner and "_secrets/api_key" in banner
        key = (tmp_path / "lakehouse" / "_secrets" / "api_key").read_text().strip()
        assert key not in banner
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/content?user_id=u-1",
                                         headers={"X-API-Key": key})  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.load(answer)["person_id"] == "p-1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/content?user_id=u-1", timeout=5)
        assert refused.value.code == 401
    finally:
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then lets the signal it caught end the process as it would have
        assert server.wait(timeout=20) in (0, -signal.SIGTERM)


def test_every_decision_is_logged_as_an_exposure_event_through_the_collectors_path(online_settings):
    from spark_jobs.bronze.normalize import normalize_line

    settings = replace(online_settings, api_keys=KEY)
    _put(settings, "p-1", {"user_id": "u-1"}, segment=SEGMENT, consent={"consent_personalization": "1"})
    with TestClient(create_app(settings), headers={"X-API-Key": KEY}) as client:
        answers = [client.get("/api/content", params={"user_id": "u-1", "time": "19:00"}).json(),
                   client.post("/api/personalize", json={"anonymous_id": "a-7", "page": {
                       "url": "https://shop.example/search?q=pizza"}}).json()]  # fmt: skip
    # the app has stopped: its last group of exposures is written
    lines = [
        line for path in sorted(settings.landing.glob("collector-*.ndjson")) for line in path.read_text().splitlines()
    ]
    events = {e["event_id"]: e for e in map(normalize_line, lines)}  # bronze's own parser takes each
    assert set(events) == {a["decision_id"] for a in answers}
    first = events[answers[0]["decision_id"]]
    assert (first["event_type"], first["schema_version"], first["source"]["kind"]) == ("exposure", 4, "api")
    assert (first["anonymous_id"], first["user_id"]) == ("uid:u-1", "u-1")
    expected = {"rule": "high-intent-offer", "segment": "High Intent", "intent_score": "85", "personalized": "true",
                "channel": "web", "model_version": "weighted-v1"}  # fmt: skip
    assert {k: first["properties"][k] for k in expected} == expected
    second = events[answers[1]["decision_id"]]
    assert second["page"]["path"] == "/search" and second["properties"]["personalized"] == "false"
