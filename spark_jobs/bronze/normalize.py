"""Source adapters: one raw input line in, one canonical event out, or a reason it was rejected.

Pure Python and independent of Spark, so each adapter is unit-tested on realistic payloads; the bronze
job applies `normalize_records` to every line through Arrow. Unknown source fields are kept in
`properties`, never dropped.

Adapters emit the current canonical version (SCHEMA_VERSION) and are checked against its JSON Schema in
tables/events/. Events that arrive already canonical (they carry `schema_version`) are checked against
the schema of the version they declare, looked up in a `SchemaRegistry` that bronze re-reads every
micro-batch: dropping canonical_event.v<N>.schema.json into the schema folder makes version N acceptable
without restarting the stream.

A rejection's detail (bronze.quarantine.detail, which analysts read and reports quote) names the field and
the rule it breaks, never the value: `anonymous_id: expected string, got null`. The raw record is kept
beside it (bronze.quarantine.raw) for a replay after a fix.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jsonschema_rs

from spark_jobs.bronze.vocabulary import BUNDLED_VOCABULARY, CUSTOM, Vocabulary
from spark_jobs.contracts import TABLES_DIR
from spark_jobs.settings import Settings, interval_seconds, setting_default

SCHEMA_VERSION = 3  # what the adapters emit

# Each source's own event names -> canonical event_type, as config/event_vocabulary.yaml bundles them (the
# bronze job reads the configured file every micro-batch; these are the defaults the simulator speaks).
WEB_SDK_KINDS = BUNDLED_VOCABULARY.mapping("web_sdk")
SEGMENT_TRACK_EVENTS = BUNDLED_VOCABULARY.mapping("segment")
MOBILE_SDK_EVENTS = BUNDLED_VOCABULARY.mapping("mobile_sdk")
SNOWPLOW_ACTIONS = BUNDLED_VOCABULARY.mapping("snowplow")
# IoT / store-beacon proximity classes -> a rough distance in metres (kept beside the raw class).
BEACON_PROXIMITY_M = {"immediate": "0.5", "near": "3", "far": "10"}
CONSENT_SCOPES = ("analytics", "marketing", "personalization")
CAMPAIGN_FIELDS = ("source", "medium", "name", "term", "content")
# Segment context fields mapped onto canonical columns; the rest (app, network, screen ...) go to
# properties as context.<name>.
_SEGMENT_CONTEXT = {"ip", "locale", "timezone", "userAgent", "page", "location", "device", "os", "library", "consent",
                    "campaign"}  # fmt: skip
# Fields the Segment adapter maps onto canonical columns; every other field goes to properties,
# except writeKey, a source credential that is never stored.
_SEGMENT_TOP_LEVEL = {
    "type", "event", "name", "messageId", "anonymousId", "userId", "timestamp", "sentAt", "receivedAt",
    "originalTimestamp", "context", "properties", "traits", "previousId", "writeKey",
}  # fmt: skip
_WEB_SDK_TOP_LEVEL = {
    "sdk",
    "sdk_version",
    "kind",
    "eid",
    "ts",
    "recv_ts",
    "anon",
    "uid",
    "sid",
    "url",
    "ref",
    "ua",
    "dev",
    "ip",
    "lang",
    "tz",
    "geo",
    "consent",
    "data",
    "x",
    "y",
    "button_id",
}
# Epoch-millisecond times outside these years are treated as garbage, not as dates.
_MIN_EPOCH_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_EPOCH_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)


class Reason(StrEnum):
    """Why an input line was quarantined (bronze.quarantine.reason)."""

    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_SOURCE = "unknown_source"
    SCHEMA_VIOLATION = "schema_violation"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    STALE_TIMESTAMP = "stale_timestamp"
    OVERSIZE = "oversize_record"
    INVALID_ENCODING = "invalid_encoding"
    TOO_LATE = "too_late_for_watermark"
    QUALITY = "quality_check_failed"  # set by bronze's data quality gate, not by the parser


@dataclass(frozen=True)
class Limits:
    """What bronze refuses on sight; the values come from Settings (INTENTLAKE_MAX_RECORD_BYTES, ...)."""

    max_record_bytes: int
    max_clock_skew_s: int  # occurred_at may be this far after received_at (client clocks drift)
    max_event_age_s: int  # ... and this far before it (offline SDK queues)
    max_depth: int = 32  # nesting of objects and arrays in one record
    # Event time before which bronze no longer accepts events (newest event time seen minus the dedup
    # window); set per micro-batch by the bronze job, None when replaying quarantine on purpose.
    watermark_us: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Limits:
        """The limits of these settings, or of the Settings defaults when none are given."""

        def value(name: str) -> Any:
            return getattr(settings, name) if settings is not None else setting_default(name)

        return cls(
            max_record_bytes=value("max_record_bytes"),
            max_clock_skew_s=interval_seconds(value("max_clock_skew")),
            max_event_age_s=interval_seconds(value("max_event_age")),
        )


class RejectedEvent(Exception):
    """A line that cannot become a canonical event; carries the quarantine reason and a detail that names the
    field and the rule it breaks, never the field's value (which may be an email or a token)."""

    def __init__(self, reason: Reason, detail: str, event_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


def canonical_type(
    vocabulary: Vocabulary, source: str, name: Any, field: str, what: str, event_id: str | None, section: str = "events"
) -> str:
    """A source's event name -> its canonical event_type by the vocabulary; an unlisted name is `custom`, or a
    schema violation naming the vocabulary file when the source is strict."""
    if isinstance(name, str):
        mapped = vocabulary.mapping(source, section).get(name)
        if mapped is not None:
            return mapped
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION,
            f"{field}: {what} must be non-empty text of at most 256 characters (got {json_type(name)})",
            event_id,
        )
    if vocabulary.is_strict(source):
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION,
            f"{field}: {what} is not listed in {Path(vocabulary.path).name} (sources: {source}: {section}) and "
            f"the source is strict",
            event_id,
        )
    return CUSTOM


def json_type(value: Any) -> str:
    """The JSON type of a parsed value (null, boolean, integer, number, string, array, object): what a detail
    may say about a value without showing it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "number"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


_SCHEMA_FILE = re.compile(r"canonical_event\.v(\d+)\.schema\.json")


class SchemaRegistryError(ValueError):
    """A canonical schema file cannot be used; names the file."""


@functools.lru_cache(maxsize=32)
def _compiled(schema_text: str) -> Any:
    # A compiled (Rust) validator: Python's jsonschema cost ~1 ms per event, 90% of bronze's CPU time.
    return jsonschema_rs.validator_for(json.loads(schema_text))


@functools.lru_cache(maxsize=32)
def _defined_fields(schema_text: str) -> frozenset[str]:
    """The top-level fields a schema defines (parsed once per schema, not once per event)."""
    return frozenset(json.loads(schema_text)["properties"])


@dataclass(frozen=True)
class SchemaRegistry:
    """Canonical event JSON Schemas by version, as read from a folder (small and picklable for workers)."""

    schemas: tuple[tuple[int, str], ...]  # (version, schema JSON text), ascending

    @classmethod
    def load(cls, folder: Path) -> SchemaRegistry:
        """Every canonical_event.v<N>.schema.json in `folder`; a file that cannot be used is named."""
        found = []
        for path in sorted(folder.glob("canonical_event.v*.schema.json")):
            match = _SCHEMA_FILE.fullmatch(path.name)
            if not match:
                continue
            version, text = int(match.group(1)), path.read_text()
            try:
                declared = json.loads(text)["properties"]["schema_version"]["const"]
            except (ValueError, KeyError, TypeError):
                raise SchemaRegistryError(f"{path}: not JSON with properties.schema_version.const") from None
            if declared != version:
                raise SchemaRegistryError(f"{path}: schema_version const is {declared!r}, the file name says {version}")
            try:
                _compiled(text)
            except ValueError as exc:
                raise SchemaRegistryError(f"{path}: not a valid JSON Schema ({exc})") from None
            found.append((version, text))
        if not found:
            raise SchemaRegistryError(f"{folder}: holds no canonical_event.v<N>.schema.json")
        return cls(tuple(sorted(found)))

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(version for version, _ in self.schemas)

    def text(self, version: Any, event_id: str | None = None) -> str:
        """The schema of a registered version; an unregistered one is a schema violation naming the known ones."""
        for known, text in self.schemas:
            if known == version and not isinstance(version, bool):
                return text
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION,
            f"schema_version: not a registered canonical schema version (registered: "
            f"{', '.join(map(str, self.versions))}; got {json_type(version)})",
            event_id,
        )


BUNDLED_SCHEMAS = SchemaRegistry.load(TABLES_DIR / "events")
_ADAPTER_VALIDATOR = _compiled(BUNDLED_SCHEMAS.text(SCHEMA_VERSION))  # what every adapter's output must meet


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any, field: str) -> str:
    """An ISO 8601 string or epoch milliseconds -> RFC 3339 UTC string; naive times are read as UTC."""
    if value is None:
        raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: missing (expected ISO 8601 text or epoch ms)")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not _MIN_EPOCH_MS <= value < _MAX_EPOCH_MS:
            raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: epoch milliseconds outside 2000-2100")
        return _iso(datetime.fromtimestamp(value / 1000, tz=UTC))
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: not an ISO 8601 time") from None
        return _iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: expected ISO 8601 text or epoch ms, got {json_type(value)}")


def _text(value: Any) -> str | None:
    """A property value as text: strings as they are, numbers and booleans in JSON form, objects as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def campaign_from(values: Any) -> dict | None:
    """A campaign object ({source, medium, name, term, content}) from a dict holding any of them; None if empty."""
    if not isinstance(values, dict):
        return None
    campaign = {f: _text(values.get(f)) for f in CAMPAIGN_FIELDS}
    return campaign if any(campaign.values()) else None


def campaign_from_url(url: Any) -> dict | None:
    """utm_source, utm_medium, utm_campaign, utm_term, utm_content of a URL -> a campaign object."""
    if not isinstance(url, str) or "utm_" not in url:
        return None
    query = parse_qs(urlparse(url).query)
    names = {"source": "utm_source", "medium": "utm_medium", "name": "utm_campaign", "term": "utm_term",
             "content": "utm_content"}  # fmt: skip
    return campaign_from({f: query[q][0] for f, q in names.items() if q in query})


def _text_map(values: Any) -> dict[str, str | None]:
    if not isinstance(values, dict):
        return {}
    return {str(k): _text(v) for k, v in values.items()}


def device_type_from_user_agent(user_agent: str | None) -> str | None:
    if not user_agent:
        return None
    if "iPad" in user_agent or "Tablet" in user_agent:
        return "tablet"
    if "Mobile" in user_agent or "iPhone" in user_agent or "Android" in user_agent:
        return "mobile"
    return "desktop"


def os_from_user_agent(user_agent: str | None) -> str | None:
    if not user_agent:
        return None
    for marker, name in (
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Android", "Android"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ):
        if marker in user_agent:
            return name
    return None


def _device_type(declared: Any, user_agent: str | None) -> str | None:
    declared = str(declared).lower() if declared else None
    if declared in ("desktop", "mobile", "tablet"):
        return declared
    if declared in ("ios", "android", "phone"):
        return "mobile"
    return device_type_from_user_agent(user_agent)


def _consent_from_segment(context: dict) -> list[str]:
    prefs = (context.get("consent") or {}).get("categoryPreferences") or {}
    return [scope for scope in CONSENT_SCOPES if prefs.get(scope) is True]


def from_segment(msg: dict, vocabulary: Vocabulary = BUNDLED_VOCABULARY) -> dict:
    """A Segment spec message (track, page, screen, identify, alias) -> canonical event."""
    kind = msg.get("type")
    event_id = msg.get("messageId") if isinstance(msg.get("messageId"), str) else None
    if kind == "track":
        event_type = canonical_type(vocabulary, "segment", msg.get("event"), "event", "Segment track event", event_id)
        event_name = msg["event"]
    elif kind in ("page", "screen"):
        event_type, event_name = "page_view", kind
    elif kind in ("identify", "alias"):
        event_type, event_name = "identify", kind
    else:
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION,
            f"type: Segment call type is not one of track, page, screen, identify, alias (got {json_type(kind)})",
            event_id,
        )
    context = msg.get("context") if isinstance(msg.get("context"), dict) else {}
    occurred = parse_timestamp(msg.get("timestamp", msg.get("originalTimestamp")), "timestamp")
    received_raw = msg.get("receivedAt", msg.get("sentAt"))
    received = parse_timestamp(received_raw, "receivedAt") if received_raw is not None else occurred
    user_agent = context.get("userAgent")
    page = context.get("page") if isinstance(context.get("page"), dict) else {}
    props = msg.get("properties") if isinstance(msg.get("properties"), dict) else {}
    if kind == "page":  # Segment page calls carry the page in properties too; those win
        page = {**page, **{k: props[k] for k in ("url", "path", "referrer") if k in props}}
    properties = _text_map(props)
    if kind == "track":
        properties["event_name"] = msg["event"]
    elif kind in ("page", "screen") and msg.get("name"):
        properties["page_name"] = _text(msg["name"])
    if kind == "identify":
        properties.update({f"trait.{k}": v for k, v in _text_map(msg.get("traits")).items()})
    if kind == "alias":
        properties["previous_id"] = _text(msg.get("previousId"))
    properties.update({k: _text(v) for k, v in msg.items() if k not in _SEGMENT_TOP_LEVEL})
    properties.update({f"context.{k}": _text(v) for k, v in context.items() if k not in _SEGMENT_CONTEXT})
    location = context.get("location") if isinstance(context.get("location"), dict) else {}
    user_id = msg.get("userId")
    anonymous_id = msg.get("anonymousId")
    if anonymous_id is None and isinstance(user_id, str) and user_id:
        anonymous_id = f"uid:{user_id}"  # server-side calls often carry only the login
    library = context.get("library") if isinstance(context.get("library"), dict) else {}
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_name": event_name,
        "occurred_at": occurred,
        "received_at": received,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "session_id": None,
        "device": {
            "type": _device_type((context.get("device") or {}).get("type"), user_agent),
            "os": (context.get("os") or {}).get("name") or os_from_user_agent(user_agent),
            "user_agent": user_agent,
        },
        "context": {
            "ip": context.get("ip"),
            "locale": context.get("locale"),
            "timezone": context.get("timezone"),
            "geo": {
                "lat": location.get("latitude"),
                "lon": location.get("longitude"),
                "country": location.get("country"),
                "city": location.get("city"),
            },
        },
        "page": {"url": page.get("url"), "path": page.get("path"), "referrer": page.get("referrer") or None},
        "properties": properties,
        "consent": _consent_from_segment(context),
        "campaign": campaign_from(context.get("campaign")) or campaign_from_url(page.get("url")),
        "source": {"kind": "segment", "sdk": library.get("name"), "version": library.get("version")},
        "schema_version": SCHEMA_VERSION,
    }


def from_web_sdk(payload: dict, vocabulary: Vocabulary = BUNDLED_VOCABULARY) -> dict:
    """A raw web SDK payload (epoch-ms times; clicks with x, y, button_id) -> canonical event."""
    event_id = payload.get("eid") if isinstance(payload.get("eid"), str) else None
    event_type = canonical_type(vocabulary, "web_sdk", payload.get("kind"), "kind", "web SDK event kind", event_id)
    occurred = parse_timestamp(payload.get("ts"), "ts")
    received = parse_timestamp(payload["recv_ts"], "recv_ts") if payload.get("recv_ts") is not None else occurred
    url = payload.get("url")
    user_agent = payload.get("ua")
    geo = payload.get("geo") if isinstance(payload.get("geo"), dict) else {}
    properties = _text_map(payload.get("data"))
    for key in ("x", "y", "button_id"):
        if key in payload:
            properties[key] = _text(payload[key])
    properties.update({k: _text(v) for k, v in payload.items() if k not in _WEB_SDK_TOP_LEVEL})
    consent = payload.get("consent")
    return {
        "event_id": event_id,
        "event_type": event_type,
        "event_name": payload["kind"],
        "occurred_at": occurred,
        "received_at": received,
        "user_id": payload.get("uid"),
        "anonymous_id": payload.get("anon"),
        "session_id": payload.get("sid"),
        "device": {
            "type": _device_type(payload.get("dev"), user_agent),
            "os": os_from_user_agent(user_agent),
            "user_agent": user_agent,
        },
        "context": {
            "ip": payload.get("ip"),
            "locale": payload.get("lang"),
            "timezone": payload.get("tz"),
            "geo": {
                "lat": geo.get("lat"),
                "lon": geo.get("lon"),
                "country": geo.get("cc"),
                "city": geo.get("city"),
            },
        },
        "page": {
            "url": url,
            "path": urlparse(url).path or "/" if isinstance(url, str) else None,
            "referrer": payload.get("ref") or None,
        },
        "properties": properties,
        "consent": [s for s in consent if s in CONSENT_SCOPES] if isinstance(consent, list) else [],
        "campaign": campaign_from_url(url),
        "source": {"kind": "web_sdk", "sdk": payload.get("sdk"), "version": payload.get("sdk_version")},
        "schema_version": SCHEMA_VERSION,
    }


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def _canonical(
    event_id: Any,
    event_type: str,
    occurred: str,
    received: str,
    *,
    event_name: Any = None,
    user_id: Any = None,
    anonymous_id: Any = None,
    session_id: Any = None,
    device: dict | None = None,
    context: dict | None = None,
    page: dict | None = None,
    properties: dict | None = None,
    consent: list[str] | None = None,
    campaign: dict | None = None,
    source: dict,
) -> dict:
    return {
        "event_id": event_id, "event_type": event_type, "event_name": event_name, "occurred_at": occurred,
        "received_at": received, "user_id": user_id, "anonymous_id": anonymous_id, "session_id": session_id,
        "device": device or {"type": None, "os": None, "user_agent": None},
        "context": context or {"ip": None, "locale": None, "timezone": None, "geo": None},
        "page": page or {"url": None, "path": None, "referrer": None},
        "properties": properties or {}, "consent": consent or [], "campaign": campaign, "source": source,
        "schema_version": SCHEMA_VERSION,
    }  # fmt: skip


def from_mobile_sdk(payload: dict, vocabulary: Vocabulary = BUNDLED_VOCABULARY) -> dict:
    """A mobile SDK event (iOS / Android): touches carry touch_coordinates, screens stand in for pages."""
    event_id = payload.get("event_uuid") if isinstance(payload.get("event_uuid"), str) else None
    event_type = canonical_type(
        vocabulary, "mobile_sdk", payload.get("event_name"), "event_name", "mobile SDK event", event_id
    )
    occurred = parse_timestamp(payload.get("client_ts"), "client_ts")
    received = parse_timestamp(payload["server_ts"], "server_ts") if payload.get("server_ts") is not None else occurred
    properties = _text_map(payload.get("attributes"))
    touch = payload.get("touch_coordinates")
    if isinstance(touch, dict):
        properties.update(x=_text(touch.get("x")), y=_text(touch.get("y")))
    elif isinstance(touch, list) and len(touch) == 2:
        properties.update(x=_text(touch[0]), y=_text(touch[1]))
    if payload.get("target_id") is not None:
        properties["button_id"] = _text(payload["target_id"])
    known = {"platform", "sdk_version", "event_name", "event_uuid", "client_ts", "server_ts", "device_id",
             "user_id", "session_uuid", "touch_coordinates", "target_id", "screen", "device_class", "locale",
             "timezone", "location", "ip", "attributes", "consent"}  # fmt: skip
    properties.update({k: _text(v) for k, v in payload.items() if k not in known})
    platform = str(payload.get("platform") or "").lower()
    os_name = {"ios": "iOS", "android": "Android", "ipados": "iPadOS"}.get(platform, payload.get("platform"))
    location = payload.get("location") if isinstance(payload.get("location"), dict) else {}
    screen = payload.get("screen")
    consent = payload.get("consent")
    return _canonical(
        event_id, event_type, occurred, received, event_name=payload["event_name"],
        user_id=payload.get("user_id"), anonymous_id=payload.get("device_id"), session_id=payload.get("session_uuid"),
        device={"type": "tablet" if payload.get("device_class") == "tablet" else "mobile", "os": os_name,
                "user_agent": None},
        context={"ip": payload.get("ip"), "locale": payload.get("locale"), "timezone": payload.get("timezone"),
                 "geo": {"lat": location.get("lat"), "lon": location.get("lon"), "country": location.get("country"),
                         "city": location.get("city")}},
        page={"url": None, "path": f"app://{screen}" if screen else None, "referrer": None},
        properties=properties,
        consent=[c for c in consent if c in CONSENT_SCOPES] if isinstance(consent, list) else [],
        source={"kind": "mobile_sdk", "sdk": f"{platform}-sdk" if platform else None,
                "version": payload.get("sdk_version")},
    )  # fmt: skip


def from_server_log(entry: dict, vocabulary: Vocabulary = BUNDLED_VOCABULARY) -> dict:
    """A web server access-log entry (JSON): a page or product view seen from the server side."""
    event_id = entry.get("request_id") if isinstance(entry.get("request_id"), str) else None
    method, status = entry.get("method"), entry.get("status")
    if method != "GET" or not isinstance(status, int) or not 200 <= status < 400:
        raise RejectedEvent(Reason.SCHEMA_VIOLATION, "method/status: only GET requests answered with a status from "
                            "200 to 399 are behaviour events", event_id)  # fmt: skip
    path = entry.get("path")
    occurred = parse_timestamp(entry.get("time"), "time")
    user_agent = entry.get("user_agent")
    known = {"log_type", "time", "request_id", "client_ip", "method", "path", "status", "user_agent", "referrer",
             "anonymous_id", "user_id", "host", "bytes_sent", "duration_ms"}  # fmt: skip
    properties = {k: _text(entry[k]) for k in ("status", "bytes_sent", "duration_ms") if k in entry}
    properties.update({k: _text(v) for k, v in entry.items() if k not in known})
    event_type = "page_view"
    if isinstance(path, str) and path.startswith("/product/"):
        event_type = "product_view"
        properties["product_id"] = path.split("/")[2].split("?")[0]
    host = entry.get("host")
    return _canonical(
        event_id, event_type, occurred, occurred,
        user_id=entry.get("user_id"), anonymous_id=entry.get("anonymous_id"),
        device={"type": device_type_from_user_agent(user_agent), "os": os_from_user_agent(user_agent),
                "user_agent": user_agent},
        context={"ip": entry.get("client_ip"), "locale": None, "timezone": None, "geo": None},
        page={"url": f"https://{host}{path}" if host and isinstance(path, str) else None,
              "path": urlparse(path).path if isinstance(path, str) else None,
              "referrer": entry.get("referrer") or None},
        properties=properties,
        campaign=campaign_from_url(path),
        source={"kind": "server_log", "sdk": None, "version": None},
    )  # fmt: skip


SNOWPLOW_WEB_PAGE = "iglu:com.snowplowanalytics.snowplow/web_page/jsonschema/1-"
SNOWPLOW_WEB_PAGE_COLUMN = "contexts_com_snowplowanalytics_snowplow_web_page_1"
_IGLU = re.compile(r"iglu:([^/]+)/([^/]+)/[^/]+/(\d+)-\d+-\d+")
# Consent scope names Snowplow's consent plugins and CMPs use -> intentlake's consent scopes.
_SNOWPLOW_CONSENT_SCOPES = {"analytics": "analytics", "statistics": "analytics", "performance": "analytics",
                            "marketing": "marketing", "advertising": "marketing", "targeting": "marketing",
                            "personalization": "personalization", "personalisation": "personalization",
                            "preferences": "personalization", "functional": "personalization"}  # fmt: skip
# yauaa's deviceClass -> device type; the robot, hacker and spy classes are bots.
_YAUAA_DEVICE = {"Desktop": "desktop", "Anonymized": None, "Phone": "mobile", "Mobile": "mobile",
                 "Tablet": "tablet", "Watch": "mobile", "Handheld Game Console": "mobile", "eReader": "tablet",
                 "Robot": "bot", "Robot Mobile": "bot", "Robot Imitator": "bot", "Hacker": "bot",
                 "Spy": "bot"}  # fmt: skip


def _iglu_key(uri: Any) -> tuple[str, str] | None:
    """'iglu:com.acme/video_played/jsonschema/1-0-2' -> ('com.acme/video_played', '1'), or None."""
    match = _IGLU.fullmatch(uri) if isinstance(uri, str) else None
    return (f"{match.group(1)}/{match.group(2)}", match.group(3)) if match else None


def _json_value(value: Any) -> Any:
    """The enriched TSV form carries self-describing JSON as strings; the Analytics SDK form as objects."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def snowplow_entities(event: dict) -> dict[str, list[dict]]:
    """The event's context entities (sent and derived by enrichments) by Iglu vendor/name, each entity's data.

    Read from the enriched event's `contexts` and `derived_contexts` (self-describing JSON whose data lists
    {schema, data} entries, as objects or strings) and from the Analytics SDK's JSON columns
    (`contexts_<vendor>_<name>_<major>`: a list of the entities' data, keyed by a flattened name that cannot
    be turned back into the vendor, so those are kept under that column name as well as the known names).
    """
    found: dict[str, list[dict]] = {}
    for field in ("contexts", "derived_contexts"):
        envelope = _json_value(event.get(field))
        for item in (envelope.get("data") if isinstance(envelope, dict) else None) or ():
            key = _iglu_key(item.get("schema")) if isinstance(item, dict) else None
            if key is not None and isinstance(item.get("data"), dict):
                found.setdefault(key[0], []).append(item["data"])
    for field, value in event.items():
        if field.startswith("contexts_") and isinstance(value, list):
            known = _SDK_CONTEXT_COLUMNS.get(field.rsplit("_", 1)[0])
            for entry in value:
                if isinstance(entry, dict):
                    found.setdefault(known or field, []).append(entry)
    return found


# The context entities we read; the Analytics SDK names each one's column contexts_<vendor>_<name>_<major>
# with dots and slashes as underscores, which these prefixes (without _<major>) undo.
_SNOWPLOW_CONTEXTS = (
    "com.snowplowanalytics.snowplow/web_page", "com.snowplowanalytics.snowplow/ua_parser_context",
    "nl.basjes/yauaa_context", "com.iab.snowplow/spiders_and_robots",
    "com.snowplowanalytics.snowplow.ecommerce/product", "com.snowplowanalytics.snowplow.ecommerce/transaction",
    "com.snowplowanalytics.snowplow.ecommerce/cart",
)  # fmt: skip
_SDK_CONTEXT_COLUMNS = {"contexts_" + re.sub(r"[./]", "_", key): key for key in _SNOWPLOW_CONTEXTS}


def snowplow_page_view_id(event: dict, entities: dict[str, list[dict]] | None = None) -> str | None:
    """The web_page context's id: the page view a Snowplow web event belongs to (None when not sent).

    Read from the Analytics SDK's JSON form (`contexts_com_snowplowanalytics_snowplow_web_page_1`: a list of
    the context's data) or from the enriched event's `contexts` (a self-describing JSON, as an object or a
    string, whose data lists {schema, data} entries).
    """
    entities = snowplow_entities(event) if entities is None else entities
    for entry in entities.get("com.snowplowanalytics.snowplow/web_page", ()):
        if isinstance(entry.get("id"), str) and 0 < len(entry["id"]) <= 128:
            return entry["id"]  # longer than an event id may be: not a page view id we can key on
    return None


def snowplow_self_describing(event: dict) -> tuple[str, dict] | None:
    """A self-describing (unstruct) event's (Iglu schema URI, data), from either JSON form, or None."""
    envelope = _json_value(event.get("unstruct_event"))
    if isinstance(envelope, dict):
        inner = envelope.get("data")
        if isinstance(inner, dict) and "schema" in inner:  # the unstruct_event wrapper around the event
            envelope = inner
        if isinstance(envelope.get("schema"), str) and isinstance(envelope.get("data"), dict):
            return envelope["schema"], envelope["data"]
    vendor, name, version = event.get("event_vendor"), event.get("event_name"), event.get("event_version")
    for field, value in event.items():
        if field.startswith("unstruct_event_") and isinstance(value, dict):
            if isinstance(vendor, str) and isinstance(name, str):
                return f"iglu:{vendor}/{name}/{event.get('event_format') or 'jsonschema'}/{version or '1-0-0'}", value
            return f"iglu:unknown/{field.removeprefix('unstruct_event_')}/jsonschema/1-0-0", value
    return None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _snowplow_consent(name: str, data: dict) -> tuple[list[str], dict[str, str | None]]:
    """A consent event's granted scopes (intentlake's names) and what to keep of it."""
    raw = data.get("consentScopes") or data.get("consent_scopes") or []
    scopes = [s for s in raw if isinstance(s, str)] if isinstance(raw, list) else []
    withdrawn = name.endswith("consent_withdrawn") or data.get("eventType") == "deny_all"
    if data.get("all") is True and withdrawn:
        scopes = []
    granted = [] if withdrawn else sorted({_SNOWPLOW_CONSENT_SCOPES[s.lower()] for s in scopes
                                           if s.lower() in _SNOWPLOW_CONSENT_SCOPES})  # fmt: skip
    action = "withdrawn" if withdrawn else str(data.get("eventType") or "granted")
    return granted, {"consent_action": action, "consent_scopes": ",".join(scopes) or None,
                     "consent_version": _text(data.get("consentVersion")),
                     "basis_for_processing": _text(data.get("basisForProcessing"))}  # fmt: skip


def _snowplow_ecommerce(data: dict, entities: dict[str, list[dict]]) -> dict[str, str | None]:
    """Products, cart and transaction of an e-commerce event (the action's entities, or an older event's data)."""
    props: dict[str, str | None] = {}
    products = entities.get("com.snowplowanalytics.snowplow.ecommerce/product", [])
    if not products and ("sku" in data or "productId" in data):  # add_to_cart / remove_from_cart 1-0-0
        products = [{"id": data.get("sku", data.get("productId")), "name": data.get("name"),
                     "category": data.get("category"), "price": data.get("unitPrice"),
                     "quantity": data.get("quantity"), "currency": data.get("currency")}]  # fmt: skip
    ids = [str(p["id"]) for p in products if p.get("id") is not None]
    if ids:
        first = products[0]
        props.update(product_id=ids[0], product_ids=",".join(ids), product_name=_text(first.get("name")),
                     category=_text(first.get("category")), price=_text(first.get("price")),
                     quantity=_text(first.get("quantity")), currency=_text(first.get("currency")))  # fmt: skip
    for transaction in entities.get("com.snowplowanalytics.snowplow.ecommerce/transaction", [])[:1]:
        props.update(order_id=_text(transaction.get("transaction_id")), revenue=_text(transaction.get("revenue")),
                     currency=_text(transaction.get("currency")) or props.get("currency"))  # fmt: skip
    for cart in entities.get("com.snowplowanalytics.snowplow.ecommerce/cart", [])[:1]:
        props.update(cart_id=_text(cart.get("cart_id")), cart_value=_text(cart.get("total_value")))
    return {k: v for k, v in props.items() if v is not None}


def _snowplow_unstruct(
    event: dict, vocabulary: Vocabulary, entities: dict[str, list[dict]], event_id: str | None
) -> tuple[str, str, dict[str, str | None], list[str] | None]:
    """A self-describing event -> (event_type, event_name, properties, consent scopes or None)."""
    found = snowplow_self_describing(event)
    key = _iglu_key(found[0]) if found else None
    if found is None or key is None:
        raise RejectedEvent(Reason.SCHEMA_VIOLATION, "unstruct_event: a self-describing event needs {schema: "
                            "iglu:vendor/name/format/version, data: {...}}", event_id)  # fmt: skip
    uri, data = found
    name = key[0]
    action = data.get("type") if isinstance(data.get("type"), str) else None
    mapping = vocabulary.mapping("snowplow", "schemas")
    event_type = mapping.get(f"{name}#{action}") if action else None
    if event_type is None:
        event_type = canonical_type(vocabulary, "snowplow", name, "unstruct_event", "self-describing schema",
                                    event_id, "schemas")  # fmt: skip
    props: dict[str, str | None] = {}
    consent = None
    short = name.rsplit("/", 1)[1]
    if event_type == CUSTOM or short not in _KNOWN_SNOWPLOW_EVENTS:
        # a custom event keeps all its data, except what a visitor typed into a form (personal data)
        props.update(
            {_snake(str(k)): _text(v) for k, v in data.items() if not (short.endswith("_form") and k == "value")}
        )
        if action and short == "snowplow_ecommerce_action":
            name = f"{name}#{action}"  # list_view, checkout_step ...: one custom name per action type
    elif short == "link_click":
        classes = data.get("elementClasses")
        props.update(target_url=_text(data.get("targetUrl")), element_id=_text(data.get("elementId")),
                     element_classes=" ".join(map(str, classes)) if isinstance(classes, list) else _text(classes),
                     element_target=_text(data.get("elementTarget")),
                     element_content=_text(data.get("elementContent")))  # fmt: skip
        if data.get("elementId") is not None:
            props["button_id"] = _text(data["elementId"])
    elif short in ("focus_form", "change_form", "submit_form"):
        props["form_action"] = short.removesuffix("_form")
        for field in ("formId", "elementId", "nodeName", "type", "elementType"):
            if data.get(field) is not None:
                props[_snake(field)] = _text(data[field])
        elements = data.get("elements") if isinstance(data.get("elements"), list) else []
        # what a visitor typed is personal data: never stored, but counted so nothing vanishes unseen
        withheld = int("value" in data) + sum(1 for e in elements if isinstance(e, dict) and "value" in e)
        if elements:
            props["form_fields"] = ",".join(str(e.get("name")) for e in elements if isinstance(e, dict))
        if withheld:
            props["form_values_withheld"] = str(withheld)
    elif short == "site_search":
        terms = data.get("terms")
        props["query"] = " ".join(map(str, terms)) if isinstance(terms, list) else _text(terms)
        for field in ("filters", "totalResults", "pageResults"):
            if data.get(field) is not None:
                props[_snake(field)] = _text(data[field])
    elif short in ("snowplow_ecommerce_action", "add_to_cart", "remove_from_cart"):
        if action:
            props["ecommerce_action"] = action
        props.update(_snowplow_ecommerce(data, entities))
    elif short in ("consent_preferences", "consent_granted", "consent_withdrawn"):
        consent, kept = _snowplow_consent(short, data)
        props.update(kept)
    props["schema"] = uri  # after the data: a data field called schema cannot hide which schema it was
    return event_type, name, props, consent


_KNOWN_SNOWPLOW_EVENTS = frozenset({
    "link_click", "focus_form", "change_form", "submit_form", "site_search", "snowplow_ecommerce_action",
    "add_to_cart", "remove_from_cart", "consent_preferences", "consent_granted", "consent_withdrawn",
})  # fmt: skip


def _snowplow_device(event: dict, entities: dict[str, list[dict]]) -> tuple[dict, dict[str, str | None]]:
    """Device type and OS from the enrichments' contexts (spiders and robots, yauaa, ua_parser), else the UA;
    a bot any of them recognises is marked device.type = bot, with which one said so."""
    user_agent = event.get("useragent")
    device_type = "mobile" if event.get("dvce_ismobile") is True else None
    os_name = None
    props: dict[str, str | None] = {}
    for yauaa in entities.get("nl.basjes/yauaa_context", [])[:1]:
        device_type = _YAUAA_DEVICE.get(yauaa.get("deviceClass"), device_type)
        os_name = _first(yauaa.get("operatingSystemNameVersion"), yauaa.get("operatingSystemName"))
        if device_type == "bot":
            props["bot_reason"] = f"yauaa deviceClass {yauaa.get('deviceClass')}"
    for parsed in entities.get("com.snowplowanalytics.snowplow/ua_parser_context", [])[:1]:
        os_name = os_name or _first(parsed.get("osVersion"), parsed.get("osFamily"))
        if parsed.get("deviceFamily") == "Spider" and device_type != "bot":
            device_type, props["bot_reason"] = "bot", "ua_parser deviceFamily Spider"
    for spider in entities.get("com.iab.snowplow/spiders_and_robots", [])[:1]:
        if spider.get("spiderOrRobot") is True and device_type != "bot":
            device_type = "bot"
            props["bot_reason"] = f"IAB {spider.get('category') or 'SPIDER_OR_ROBOT'}"
    device = {"type": device_type or device_type_from_user_agent(user_agent),
              "os": os_name or os_from_user_agent(user_agent), "user_agent": user_agent}  # fmt: skip
    return device, props


def from_snowplow(event: dict, vocabulary: Vocabulary = BUNDLED_VOCABULARY) -> dict:
    """A Snowplow enriched event in its JSON form (as the Snowplow Analytics SDKs emit it, or the enriched
    TSV's fields with their self-describing JSON as strings).

    Structured events map by se_action and self-describing events by their schema (config/event_vocabulary.yaml);
    any other schema is kept as a custom event with its schema URI and data. A page view with a web_page
    context takes its page view id as event id, as Snowplow's own data models do: the same page view sent
    twice (a tracker retry with another timestamp) is stored once. Page views and page pings carry it as
    properties.page_view_id, which attributes each ping to its page. The ua_parser, yauaa and spiders and
    robots contexts fill the device and mark bots (device.type = bot).
    """
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    kind = event.get("event")
    properties: dict[str, str | None] = {}
    entities = snowplow_entities(event)  # one pass over the fields; empty when the event has no contexts
    consent = None
    page_view_id = snowplow_page_view_id(event, entities) if kind in ("page_view", "page_ping") else None
    if page_view_id is not None:
        properties["page_view_id"] = page_view_id
        if kind == "page_view":
            properties["snowplow_event_id"] = event_id
            event_id = page_view_id
    path = event.get("page_urlpath")
    event_name = kind if isinstance(kind, str) else None
    if kind == "page_view":
        event_type = "product_view" if isinstance(path, str) and path.startswith("/product/") else "page_view"
    elif kind == "page_ping":
        event_type = "scroll"
        y_max, height = event.get("pp_yoffset_max"), event.get("doc_height")
        if isinstance(y_max, int | float) and isinstance(height, int | float) and height > 0:
            properties["scroll_depth"] = _text(round(min(100.0, 100.0 * y_max / height)))
    elif kind == "struct":
        event_type = canonical_type(vocabulary, "snowplow", event.get("se_action"), "se_action",
                                    "Snowplow struct action", event_id)  # fmt: skip
        event_name = event.get("se_action")
        for key in ("se_category", "se_label", "se_property", "se_value"):
            if event.get(key) is not None:
                properties[key] = _text(event[key])
    elif kind == "transaction":
        event_type = "purchase"
        properties.update(order_id=_text(event.get("tr_orderid")), revenue=_text(event.get("tr_total")))
    elif kind == "unstruct":
        event_type, event_name, found, consent = _snowplow_unstruct(event, vocabulary, entities, event_id)
        properties.update(found)
    else:  # transaction_item, ad impressions and other kinds: custom, unless the source is strict
        event_type = canonical_type(vocabulary, "snowplow", kind, "event", "Snowplow event kind", event_id)
    occurred = parse_timestamp(_first(event.get("derived_tstamp"), event.get("dvce_created_tstamp"),
                                      event.get("collector_tstamp")), "derived_tstamp")  # fmt: skip
    received = parse_timestamp(event.get("collector_tstamp"), "collector_tstamp")
    device, device_props = _snowplow_device(event, entities)
    properties.update(device_props)
    session_index = event.get("domain_sessionidx")
    if session_index is not None:
        properties["session_index"] = _text(session_index)
    if event.get("app_id") is not None:
        properties["app_id"] = _text(event["app_id"])
    return _canonical(
        event_id, event_type, occurred, received,
        event_name=event_name,
        user_id=event.get("user_id"), anonymous_id=_first(event.get("domain_userid"), event.get("network_userid")),
        session_id=event.get("domain_sessionid"),
        device=device,
        context={"ip": event.get("user_ipaddress"), "locale": event.get("br_lang"),
                 "timezone": _first(event.get("os_timezone"), event.get("geo_timezone")),
                 "geo": {"lat": event.get("geo_latitude"), "lon": event.get("geo_longitude"),
                         "country": event.get("geo_country"), "city": event.get("geo_city")}},
        page={"url": event.get("page_url"), "path": path, "referrer": event.get("page_referrer") or None},
        properties=properties,
        consent=consent,
        campaign=campaign_from({"source": event.get("mkt_source"), "medium": event.get("mkt_medium"),
                                "name": event.get("mkt_campaign"), "term": event.get("mkt_term"),
                                "content": event.get("mkt_content")}),
        source={"kind": "snowplow", "sdk": event.get("name_tracker"), "version": event.get("v_tracker")},
    )  # fmt: skip


def from_iot_beacon(reading: dict, vocabulary: Vocabulary = BUNDLED_VOCABULARY) -> dict:
    """A store beacon gateway's sighting of a shopper's phone (BLE proximity) -> a location event.

    The gateway reports which app install it saw (subject_id), near which beacon, how strongly (rssi,
    proximity) and where the gateway stands; in-store position is a micro-moment signal for silver.
    """
    event_id = reading.get("reading_id") if isinstance(reading.get("reading_id"), str) else None
    occurred = parse_timestamp(reading.get("seen_at"), "seen_at")
    received = parse_timestamp(reading["uplink_at"], "uplink_at") if reading.get("uplink_at") is not None else occurred
    beacon = reading.get("beacon") if isinstance(reading.get("beacon"), dict) else {}
    position = reading.get("position") if isinstance(reading.get("position"), dict) else {}
    properties = {"beacon_uuid": _text(beacon.get("uuid")), "beacon_major": _text(beacon.get("major")),
                  "beacon_minor": _text(beacon.get("minor"))}  # fmt: skip
    for key in ("gateway_id", "store_id", "zone", "rssi", "tx_power", "proximity"):
        if reading.get(key) is not None:
            properties[key] = _text(reading[key])
    if reading.get("proximity") in BEACON_PROXIMITY_M:
        properties["distance_m"] = BEACON_PROXIMITY_M[reading["proximity"]]
    known = {"reading_id", "seen_at", "uplink_at", "beacon", "position", "subject_id", "user_id", "platform",
             "firmware", "gateway_id", "store_id", "zone", "rssi", "tx_power", "proximity", "consent"}  # fmt: skip
    properties.update({k: _text(v) for k, v in reading.items() if k not in known})
    properties.update({f"beacon.{k}": _text(v) for k, v in beacon.items() if k not in ("uuid", "major", "minor")})
    platform = str(reading.get("platform") or "").lower()
    consent = reading.get("consent")
    return _canonical(
        event_id, "location", occurred, received, event_name="beacon_sighting",
        user_id=reading.get("user_id"), anonymous_id=reading.get("subject_id"),
        device={"type": "mobile", "os": {"ios": "iOS", "android": "Android"}.get(platform), "user_agent": None},
        context={"ip": None, "locale": None, "timezone": position.get("timezone"),
                 "geo": {"lat": position.get("lat"), "lon": position.get("lon"), "country": position.get("country"),
                         "city": position.get("city")}},
        properties=properties,
        consent=[c for c in consent if c in CONSENT_SCOPES] if isinstance(consent, list) else [],
        source={"kind": "iot_beacon", "sdk": "beacon-gateway", "version": _text(reading.get("firmware"))},
    )  # fmt: skip


_CANONICAL_OPTIONAL = {"event_name": None, "user_id": None, "session_id": None, "device": None, "context": None,
                       "page": None, "properties": {}, "consent": [], "campaign": None}  # fmt: skip


def from_canonical(event: dict, registry: SchemaRegistry) -> dict:
    """An event already in canonical form (our own services, partner feeds), checked against its declared version.

    Fields its version does not define are moved to properties rather than dropped; times are normalised to UTC.
    """
    event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
    schema = registry.text(event.get("schema_version"), event_id)
    defined = _defined_fields(schema)
    extra = {k: _text(v) for k, v in event.items() if k not in defined}
    out = {k: v for k, v in event.items() if k in defined}
    if extra:
        out["properties"] = {**(out.get("properties") or {}), **extra}
    for name in ("occurred_at", "received_at"):
        if name in out:
            out[name] = parse_timestamp(out[name], name)
    validate(out, _compiled(schema))
    return {**_CANONICAL_OPTIONAL, **out}


ADAPTERS = {
    "segment": from_segment,
    "web_sdk": from_web_sdk,
    "mobile_sdk": from_mobile_sdk,
    "server_log": from_server_log,
    "snowplow": from_snowplow,
    "iot_beacon": from_iot_beacon,
}

# Per source format, the source fields that identify a person: canonical column (or, for a Segment alias,
# properties.previous_id) -> the field(s) the adapter reads it from, first non-empty wins. Erasure finds a
# person by these keys in lines the adapters reject; tests/unit/test_erasure_matching.py holds every
# adapter to this table.
IDENTIFIER_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "canonical": {"anonymous_id": ("anonymous_id",), "user_id": ("user_id",)},
    "segment": {"anonymous_id": ("anonymousId",), "user_id": ("userId",), "previous_id": ("previousId",)},
    "web_sdk": {"anonymous_id": ("anon",), "user_id": ("uid",)},
    "mobile_sdk": {"anonymous_id": ("device_id",), "user_id": ("user_id",)},
    "server_log": {"anonymous_id": ("anonymous_id",), "user_id": ("user_id",)},
    "snowplow": {"anonymous_id": ("domain_userid", "network_userid"), "user_id": ("user_id",)},
    "iot_beacon": {"anonymous_id": ("subject_id",), "user_id": ("user_id",)},
}


def detect_source(obj: dict) -> str:
    """Which adapter understands this object, judged by the fields each format always carries."""
    if "schema_version" in obj and "event_type" in obj:
        return "canonical"
    if "type" in obj and ("messageId" in obj or "anonymousId" in obj or "userId" in obj or "event" in obj):
        return "segment"
    if "eid" in obj or ("sdk" in obj and "kind" in obj):
        return "web_sdk"
    if "touch_coordinates" in obj or ("event_uuid" in obj and "device_id" in obj):
        return "mobile_sdk"
    if obj.get("log_type") == "access" or ("request_id" in obj and "method" in obj):
        return "server_log"
    if "collector_tstamp" in obj and "event" in obj:
        return "snowplow"
    if "reading_id" in obj and ("beacon" in obj or "gateway_id" in obj):
        return "iot_beacon"
    keys = ", ".join(sorted(str(k) for k in obj)[:8])
    raise RejectedEvent(Reason.UNKNOWN_SOURCE, f"no adapter recognises an object with fields [{keys}]")


def validate(event: dict, validator: Any = None) -> None:
    """Check a canonical event against a JSON Schema (default: the adapters' version); the detail names the
    field and the rule it breaks, never the value."""
    validator = validator or _ADAPTER_VALIDATOR
    if validator.is_valid(event):
        return
    error = next(iter(validator.iter_errors(event)))
    where, rule = schema_rule(error)
    detail = f"{where}: {rule}"
    raise RejectedEvent(Reason.SCHEMA_VIOLATION, detail if len(detail) <= 200 else detail[:197] + "...",
                        event.get("event_id"))  # fmt: skip


def _limit(info: dict, what: str) -> str:
    return f"{what} {info.get('limit')}"


# What each JSON Schema keyword a value can break asks for, in words built from the schema (never the value).
_RULES: dict[str, Any] = {
    "Enum": lambda info, _: f"not one of {json.dumps(info.get('options'))}",
    "Const": lambda info, _: f"must be {json.dumps(info.get('expected_value'))}",
    "Pattern": lambda info, _: f"does not match the pattern {info.get('pattern')}",
    "Format": lambda info, _: f"does not match format {info.get('format')}",
    "MaxLength": lambda info, _: f"longer than {info.get('limit')} characters",
    "MinLength": lambda info, _: f"shorter than {info.get('limit')} characters",
    "Maximum": lambda info, _: _limit(info, "above the maximum"),
    "Minimum": lambda info, _: _limit(info, "below the minimum"),
    "ExclusiveMaximum": lambda info, _: _limit(info, "not below"),
    "ExclusiveMinimum": lambda info, _: _limit(info, "not above"),
    "MultipleOf": lambda info, _: f"not a multiple of {info.get('multiple_of')}",
    "MaxItems": lambda info, _: f"more than {info.get('limit')} items",
    "MinItems": lambda info, _: f"fewer than {info.get('limit')} items",
    "UniqueItems": lambda info, _: "items are not unique",
    "MaxProperties": lambda info, _: f"more than {info.get('limit')} fields",
    "MinProperties": lambda info, _: f"fewer than {info.get('limit')} fields",
    "AnyOf": lambda info, _: "matches none of the allowed forms",
    "OneOfNotValid": lambda info, _: "matches none of the allowed forms",
    "OneOfMultipleValid": lambda info, _: "matches more than one of the allowed forms",
    "Not": lambda info, _: "matches a form that is not allowed",
    "FalseSchema": lambda info, _: "not allowed here",
    "PropertyNames": lambda info, _: "a field name breaks the schema's naming rule",
}


def schema_rule(error: Any) -> tuple[str, str]:
    """A JSON Schema validation error -> (field path, the rule broken), from the schema and the value's type
    only: jsonschema's own messages quote the value ('"ann@example.com" does not match ...')."""
    path = [str(p) for p in error.instance_path]
    kind = type(error.kind).__name__
    try:
        info = error.kind.as_dict()
    except Exception:  # an unexpected kind's payload: the rule's name is still worth saying
        info = {}
    if kind == "Required":
        return ".".join([*path, str(info.get("property"))]), "required, missing"
    if kind == "AdditionalProperties":
        names = [str(n) for n in info.get("unexpected") or []]
        return ".".join([*path, names[0]]) if names else ".".join(path) or "(event)", "not a field of the schema"
    where = ".".join(path) or "(event)"
    if kind == "Type":
        return where, f"expected {' or '.join(info.get('types') or [])}, got {json_type(error.instance)}"
    rule = _RULES.get(kind)
    return where, rule(info, error) if rule else f"breaks the schema's {kind} rule"


DEFAULT_LIMITS = Limits.from_settings()


def _check_times(event: dict, limits: Limits) -> None:
    occurred = datetime.fromisoformat(event["occurred_at"])
    received = datetime.fromisoformat(event["received_at"])
    ahead = (occurred - received).total_seconds()
    when = "occurred_at:"  # how far off, never the time itself
    if ahead > limits.max_clock_skew_s:
        detail = f"{when} {ahead / 3600:.1f} h after received_at (limit {limits.max_clock_skew_s / 3600:g} h)"
        raise RejectedEvent(Reason.FUTURE_TIMESTAMP, detail, event["event_id"])
    if -ahead > limits.max_event_age_s:
        detail = f"{when} {-ahead / 86400:.1f} days before received_at (limit {limits.max_event_age_s / 86400:g} days)"
        raise RejectedEvent(Reason.STALE_TIMESTAMP, detail, event["event_id"])
    if limits.watermark_us is not None and occurred.timestamp() * 1_000_000 < limits.watermark_us:
        watermark = _iso(datetime.fromtimestamp(limits.watermark_us / 1_000_000, UTC))
        detail = f"{when} before the bronze watermark {watermark} (newest event time seen minus the dedup window)"
        raise RejectedEvent(Reason.TOO_LATE, detail, event["event_id"])


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when objects/arrays nest deeper than `limit` (iterative: no recursion on hostile input)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def decode_record(raw: bytes | str | None) -> str:
    """Input bytes -> text; bytes that are not UTF-8 are rejected with the offset of the first bad one."""
    if raw is None:
        raise RejectedEvent(Reason.MALFORMED_JSON, "empty record (null value)")
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RejectedEvent(
            Reason.INVALID_ENCODING, f"byte {exc.start} (0x{raw[exc.start]:02x}) is not valid UTF-8"
        ) from None


def normalize_object(
    obj: Any,
    limits: Limits = DEFAULT_LIMITS,
    registry: SchemaRegistry = BUNDLED_SCHEMAS,
    vocabulary: Vocabulary = BUNDLED_VOCABULARY,
) -> dict:
    """One parsed JSON value -> a validated canonical event, or RejectedEvent with the reason."""
    if not isinstance(obj, dict):
        raise RejectedEvent(Reason.NOT_AN_OBJECT, f"expected a JSON object, got a JSON {type(obj).__name__}")
    if _depth_exceeds(obj, limits.max_depth):
        raise RejectedEvent(Reason.SCHEMA_VIOLATION, f"(event): objects and arrays nest deeper than {limits.max_depth}")
    source = detect_source(obj)
    try:
        event = from_canonical(obj, registry) if source == "canonical" else ADAPTERS[source](obj, vocabulary)
    except RejectedEvent:
        raise
    except (TypeError, AttributeError, ValueError, KeyError, IndexError) as exc:
        # A field of an unexpected type (a list where text belongs, text where an object belongs ...):
        # quarantine the record rather than fail the whole micro-batch. The exception's message may quote a
        # value (int() of a token, a dict key), so only its class is kept.
        detail = f"{source} record has a field of an unexpected type ({type(exc).__name__})"
        ids = (obj.get(k) for k in ("messageId", "eid", "event_uuid", "event_id", "request_id", "reading_id"))
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION, detail, next((i for i in ids if isinstance(i, str)), None)
        ) from None
    if source != "canonical":  # canonical input was checked against its own version
        validate(event)
    _check_times(event, limits)
    return event


def _parse(line: str, limits: Limits) -> Any:
    size = len(line.encode("utf-8", "surrogatepass"))
    if size > limits.max_record_bytes:
        raise RejectedEvent(Reason.OVERSIZE, f"record is {size:,} bytes; the limit is {limits.max_record_bytes:,}")
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:  # json's messages give a position, not the text
        raise RejectedEvent(Reason.MALFORMED_JSON, f"not valid JSON: {exc}"[:200]) from None


def normalize_line(
    line: str,
    limits: Limits = DEFAULT_LIMITS,
    registry: SchemaRegistry = BUNDLED_SCHEMAS,
    vocabulary: Vocabulary = BUNDLED_VOCABULARY,
) -> dict:
    """One NDJSON line holding one event -> a validated canonical event, or RejectedEvent with the reason."""
    return normalize_object(_parse(line, limits), limits, registry, vocabulary)


def is_segment_batch(obj: Any) -> bool:
    return isinstance(obj, dict) and "batch" in obj and "type" not in obj


def normalize_records(
    line: str,
    limits: Limits = DEFAULT_LIMITS,
    registry: SchemaRegistry = BUNDLED_SCHEMAS,
    vocabulary: Vocabulary = BUNDLED_VOCABULARY,
) -> list[tuple[str, dict | RejectedEvent]]:
    """One input line -> its records as (raw text, canonical event or rejection).

    A line is one record, except a Segment batch envelope ({"batch": [...], "context": ..., "sentAt": ...}),
    which holds one record per message; the envelope's context and times apply to each message, and each
    message keeps its own raw JSON so a rejected one can be fixed and replayed alone.
    """
    try:
        obj = _parse(line, limits)
    except RejectedEvent as rejected:
        return [(line, rejected)]
    if not is_segment_batch(obj):
        try:
            return [(line, normalize_object(obj, limits, registry, vocabulary))]
        except RejectedEvent as rejected:
            return [(line, rejected)]
    messages = obj["batch"]
    if not isinstance(messages, list) or not messages:
        return [(line, RejectedEvent(Reason.SCHEMA_VIOLATION, "batch: a Segment batch needs a non-empty list"))]
    shared = {k: obj[k] for k in ("context", "sentAt", "receivedAt") if k in obj}
    records: list[tuple[str, dict | RejectedEvent]] = []
    for message in messages:
        if isinstance(message, dict):
            context = {**(shared.get("context") or {}), **(message.get("context") or {})}
            message = {**shared, **message, **({"context": context} if context else {})}
        raw = json.dumps(message, separators=(",", ":"))
        try:
            records.append((raw, normalize_object(message, limits, registry, vocabulary)))
        except RejectedEvent as rejected:
            records.append((raw, rejected))
    return records
