"""The decision logic without a server or Redis: context from the request, consent, the rules' pick."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spark_jobs.serving.decisions import BadRequest, Decider, DecisionRequest, search_query
from spark_jobs.settings import Settings

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 5, 18, 30, tzinfo=UTC)  # 19:30 in Paris, a Saturday
PERSON = {"segment": "High Intent", "intent_score": 88.0, "contributions": {"cart_add": 48.0},
          "model_version": "weighted-v1", "timezone": "Europe/Paris", "consent_personalization": True}  # fmt: skip


@pytest.fixture(scope="module")
def decider():
    return Decider.load(Settings.from_env())


def test_the_local_time_comes_from_the_request_else_its_zone_else_the_persons(decider):
    own = decider.context(None, DecisionRequest(user_id="u", local_time="07:15"), NOW)
    assert (own["local_hour"], own["daypart"], own["local_weekday"]) == (7, "morning", None)
    zoned = decider.context(None, DecisionRequest(user_id="u", timezone="America/New_York"), NOW)
    assert (zoned["local_hour"], zoned["local_weekday"], zoned["timezone"]) == (13, 6, "America/New_York")
    placed = decider.context(None, DecisionRequest(user_id="u", lat=35.68, lon=139.76), NOW)  # Tokyo
    assert (placed["timezone"], placed["local_hour"]) == ("Asia/Tokyo", 3)
    stored = decider.context(PERSON, DecisionRequest(user_id="u"), NOW)
    assert (stored["timezone"], stored["local_hour"]) == ("Europe/Paris", 19)
    assert decider.context(None, DecisionRequest(user_id="u"), NOW)["local_hour"] is None  # nothing says


def test_the_store_is_used_only_with_consent_and_the_basis_says_why_not(decider):
    request = DecisionRequest(user_id="u")
    used = decider.decide(PERSON, request, NOW, "p-1")
    assert (used["personalized"], used["segment"], used["content"]["rule"]) == (
        True,
        "High Intent",
        "high-intent-offer",
    )
    withheld = decider.decide(dict(PERSON, consent_personalization=False), request, NOW, "p-1")
    assert (withheld["personalized"], withheld["segment"], withheld["person_id"]) == (False, None, None)
    assert withheld["basis"] == "request only: no personalization consent"
    down = decider.decide(None, request, NOW, degraded="online store unavailable")
    assert down["degraded"] and down["basis"] == "request only: online store unavailable"
    assert down["content"]["rule"] == "default-web"


def test_what_is_searched_for_comes_from_the_request_or_the_pages_url():
    assert search_query(DecisionRequest(page_url="https://x.example/s?page=2&q=best+pizza")) == "best pizza"
    assert search_query(DecisionRequest(page_url="https://x.example/s?query=red%20dress")) == "red dress"
    assert search_query(DecisionRequest(search_query="shoes", page_url="https://x.example/?q=hats")) == "shoes"
    assert search_query(DecisionRequest(page_url="https://x.example/products/1")) is None


@pytest.mark.parametrize(("request_", "reason"), [
    (DecisionRequest(), "user_id or anonymous_id is required"),
    (DecisionRequest(user_id="u", channel="email"), "channel 'email'"),
    (DecisionRequest(user_id="u", local_time="2026-12-05T19:00:00"), "has no offset"),
    (DecisionRequest(user_id="u", lat=1.0), "lat and lon go together"),
    (DecisionRequest(user_id="u", intent_score=101.0), "a score 0-100"),
])  # fmt: skip
def test_a_bad_request_names_what_is_wrong(decider, request_, reason):
    with pytest.raises(BadRequest, match=reason):
        decider.decide(None, request_, NOW)


def test_an_exposure_is_a_valid_v4_canonical_event_named_by_its_decision(decider):
    from spark_jobs.bronze.normalize import BUNDLED_SCHEMAS, normalize_object
    from spark_jobs.serving.decisions import exposure_event

    request = DecisionRequest(user_id="u-1", page_url="https://shop.example/p/7?ref=mail")
    decision = decider.decide(PERSON, request, NOW, "p-1")
    event = exposure_event(decision, request, NOW)
    stored = normalize_object(event, registry=BUNDLED_SCHEMAS)  # bronze takes it as it is
    assert (stored["event_id"], stored["event_type"], stored["schema_version"]) == (
        decision["decision_id"],
        "exposure",
        4,
    )
    assert (stored["anonymous_id"], stored["page"]["path"]) == ("uid:u-1", "/p/7")
    assert (
        stored["properties"]["rule"] == decision["content"]["rule"] and stored["properties"]["personalized"] == "true"
    )
    assert all(isinstance(v, str | None) for v in stored["properties"].values())
