"""What the decision API answers: the person's segment and score from the online store, and content picked by
config/content_rules.yaml for a live channel (web, app) with the request's own context.

Pure Python, no web framework and no Redis: `Decider.decide(record, request, now)` takes the person's store
record (or None) and the request, and returns the answer. The rules are the ones gold's batch picks use,
compiled once and evaluated by the same function (`gold.content.matching` / `choose`); the context is built
from the same definitions silver uses (time zone from the request's zone, else its position, else its IP:
`silver.context.resolve_timezone`; `daypart`; the device type a user agent names: `parse_user_agent`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

from spark_jobs.config import InvalidConfigError
from spark_jobs.gold.content import ContentRules, choose, compile_rules, distance_km, load_content_rules, matching
from spark_jobs.settings import Settings
from spark_jobs.silver.context import (
    ContextConfig,
    IpTimezones,
    daypart,
    is_iana_zone,
    parse_user_agent,
    resolve_timezone,
)

_UNSEEN = object()
SEARCH_PARAMETERS = ("q", "query", "search", "s", "keyword")  # where a page's URL carries what is searched for


class BadRequest(ValueError):
    """A request the API answers with a 4xx: the message names the parameter and what is wrong."""


@dataclass(frozen=True)
class DecisionRequest:
    """What a page sends: who, where they are, what they look at (every part optional but one id)."""

    user_id: str | None = None
    anonymous_id: str | None = None
    channel: str = "web"
    local_time: str | None = None  # ISO 8601 with an offset (2026-12-05T19:05:00+01:00), or a local "HH:MM"
    timezone: str | None = None  # IANA zone
    lat: float | None = None
    lon: float | None = None
    ip: str | None = None
    user_agent: str | None = None
    device_type: str | None = None
    page_url: str | None = None
    search_query: str | None = None
    intent_score: float | None = None  # the page's own estimate, used only when the store has no score

    def check(self, channels: tuple[str, ...]) -> None:
        if not (self.user_id or self.anonymous_id):
            raise BadRequest("user_id or anonymous_id is required (who the decision is for)")
        if self.channel not in channels:
            raise BadRequest(
                f"channel {self.channel!r}: use one of {list(channels)} (content_rules.yaml live_channels)"
            )
        if (self.lat is None) != (self.lon is None):
            raise BadRequest("lat and lon go together: send both or neither")
        if self.lat is not None and not (-90 <= self.lat <= 90 and -180 <= self.lon <= 180):
            raise BadRequest("lat/lon: degrees within -90..90 / -180..180")
        if self.timezone is not None and not is_iana_zone(self.timezone):
            raise BadRequest(f"timezone {self.timezone!r} is not an IANA zone (Europe/Paris, America/New_York ...)")
        if self.intent_score is not None and not 0 <= self.intent_score <= 100:
            raise BadRequest("intent_score: a score 0-100")
        if self.local_time is not None:
            _local_clock(self.local_time)  # raises BadRequest naming it


def _local_clock(text: str) -> datetime | time:
    """'HH:MM' -> a time of the local day; an ISO 8601 date-time -> itself (it must carry its offset)."""
    text = text.strip()
    try:
        if len(text) <= 8 and ":" in text:
            return time.fromisoformat(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"local_time {text!r}: expected 'HH:MM' or an ISO 8601 time with its offset") from None
    if moment.tzinfo is None:
        raise BadRequest(f"local_time {text!r} has no offset: add one (+01:00) or send 'HH:MM'")
    return moment


def search_query(request: DecisionRequest) -> str | None:
    """What the person searches for: the request's search_query, else the page URL's q= / query= / ..."""
    if request.search_query:
        return request.search_query
    if request.page_url:
        params = parse_qs(urlsplit(request.page_url).query)
        for name in SEARCH_PARAMETERS:
            if params.get(name) and params[name][0].strip():
                return params[name][0].strip()
    return None


@dataclass
class Decider:
    """The rules, the context config and the IP table, loaded once; `decide` per request."""

    rules: ContentRules
    context_config: ContextConfig
    ip_table: IpTimezones
    programs: list = field(default_factory=list)
    zones: dict = field(default_factory=dict)  # (zone, lat, lon, ip) -> the zone resolved for it

    @classmethod
    def load(cls, settings: Settings) -> Decider:
        rules = load_content_rules(settings.content_rules_file)
        if not rules.live_channels:
            raise InvalidConfigError(settings.content_rules_file, "live_channels",
                                     "none listed: the decision API has no channel to pick for (web, app)")  # fmt: skip
        decider = cls(rules, ContextConfig.load(settings.context_file), IpTimezones.load(settings.ip_timezones_file))
        decider.programs = compile_rules(rules)
        return decider

    def context(self, record: dict[str, Any] | None, request: DecisionRequest, now: datetime) -> dict[str, Any]:
        """Every trigger variable: what the store knows of the person, what the request says, null otherwise
        (counts of moments and custom events 0, as gold fills them)."""
        record = record or {}
        values: dict[str, Any] = {
            name: (0 if name.startswith(("moments_", "custom_")) else None) for name, _ in self.rules.variables
        }
        score = record.get("intent_score", request.intent_score)
        values.update({
            "segment": record.get("segment"), "intent_score": None if score is None else float(score),
            "sessions": record.get("sessions"), "model_version": record.get("model_version"),
            "best_local_hour": record.get("best_local_hour"), "send_time_source": record.get("send_source"),
            "search_query": search_query(request),
        })  # fmt: skip
        device = request.device_type or (parse_user_agent(request.user_agent)[0] if request.user_agent else None)
        values["device_type"] = device
        zone = self._zone(record, request)
        values["timezone"] = zone
        local = self._local(request, zone, now)
        if local is not None:
            values["local_hour"] = local.hour
            values["daypart"] = daypart(local.hour, self.context_config)
            if isinstance(local, datetime):
                values["local_weekday"] = local.isoweekday()
        if request.lat is not None:
            for place in self.rules.places:
                values[f"distance_km_{place.key}"] = distance_km(request.lat, request.lon, place.lat, place.lon)
        return values

    def _zone(self, record: dict[str, Any], request: DecisionRequest) -> str | None:
        key = (request.timezone, request.lat, request.lon, request.ip)
        zone = self.zones.get(key, _UNSEEN)
        if zone is _UNSEEN:  # a page asks again and again from one place: resolve each place once
            zone = resolve_timezone(*key, self.ip_table)[0]
            if len(self.zones) >= 100_000:
                self.zones.clear()
            self.zones[key] = zone
        return zone or record.get("timezone")  # else the zone of the person's latest session (gold.send_times)

    @staticmethod
    def _local(request: DecisionRequest, zone: str | None, now: datetime) -> datetime | time | None:
        if request.local_time:
            return _local_clock(request.local_time)
        if zone:
            return now.astimezone(ZoneInfo(zone))
        return None

    def decide(self, record: dict[str, Any] | None, request: DecisionRequest, now: datetime,
               person_id: str | None = None, degraded: str | None = None) -> dict[str, Any]:  # fmt: skip
        """The API's answer (spark_jobs/serving/api.py documents its fields). What the store knows of a person
        is used only when they granted personalization (silver.profiles, the latest statement wins); without
        it the decision is the one for an unknown visitor, from the request's own context."""
        request.check(self.rules.live_channels)
        consented = bool(record and record.get("consent_personalization"))
        usable = record if consented else None
        context = self.context(usable, request, now)
        matched, failed = matching(self.programs, context)
        rule = choose(matched, request.channel)
        person = usable or {}
        if degraded:
            basis = "request only: " + degraded
        elif record is None:
            basis = "request only: the store knows no such person"
        elif not consented:
            basis = "request only: no personalization consent"
        else:
            basis = "store and request"
        content = None
        if rule is not None:
            content = {"rule": rule.name, "priority": rule.priority, "tone": rule.tone, "format": rule.format,
                       "cta": rule.cta}  # fmt: skip
        return {
            "decision_id": f"d-{uuid.uuid4().hex}",
            "person_id": person_id if consented else None,
            "personalized": consented,
            "basis": basis,
            "segment": person.get("segment"),
            "intent_score": context["intent_score"],
            "contributions": person.get("contributions", {}),
            "model_version": person.get("model_version"),
            "best_local_hour": person.get("best_local_hour"),
            "channel": request.channel,
            "content": content,
            "rules_version": self.rules.version,
            "context": {k: context[k] for k in ("timezone", "local_hour", "daypart", "device_type", "search_query")},
            "unevaluable_rules": failed,
            "degraded": degraded is not None,
        }


def exposure_event(decision: dict[str, Any], request: DecisionRequest, now: datetime) -> dict[str, Any]:
    """The canonical `exposure` event (schema version 4) that records a decision: what was shown, to whom,
    by which rule and model. Its event id is the decision id, so a repeated log is stored once; a request
    with only a login id gets the anonymous id Segment's server-side calls get (uid:<user_id>)."""
    content = decision["content"] or {}
    at = now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    properties = {
        "decision_id": decision["decision_id"], "channel": decision["channel"], "rule": content.get("rule"),
        "tone": content.get("tone"), "format": content.get("format"), "cta": content.get("cta"),
        "segment": decision["segment"], "model_version": decision["model_version"],
        "intent_score": None if decision["intent_score"] is None else f"{decision['intent_score']:g}",
        "personalized": str(decision["personalized"]).lower(), "rules_version": decision["rules_version"],
    }  # fmt: skip
    event: dict[str, Any] = {
        "event_id": decision["decision_id"], "event_type": "exposure", "occurred_at": at, "received_at": at,
        "anonymous_id": request.anonymous_id or f"uid:{request.user_id}", "user_id": request.user_id,
        "properties": properties, "source": {"kind": "api", "sdk": "intentlake-decision-api", "version": "1"},
        "schema_version": 4,
    }  # fmt: skip
    if request.page_url:
        event["page"] = {"url": request.page_url, "path": urlsplit(request.page_url).path or None, "referrer": None}
    return event
