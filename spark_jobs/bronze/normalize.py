"""Source adapters: one raw input line in, one canonical event (v1) out, or a reason it was rejected.

Pure Python and independent of Spark, so each adapter is unit-tested on realistic payloads; the bronze
job applies `normalize_line` to every line through Arrow. Unknown source fields are kept in
`properties`, never dropped. Validation uses the contract's JSON Schema
(tables/events/canonical_event.v1.schema.json).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlparse

import jsonschema_rs

from spark_jobs.contracts import canonical_event_schema

SCHEMA_VERSION = 1

# The raw web SDK's own vocabulary -> canonical event_type.
WEB_SDK_KINDS = {
    "pageview": "page_view",
    "product_view": "product_view",
    "scroll": "scroll",
    "click": "click",
    "search": "search",
    "add_to_cart": "cart_add",
    "add_to_wishlist": "wishlist_add",
    "purchase": "purchase",
    "login": "identify",
}
# Segment e-commerce spec track names (plus two custom UI events) -> canonical event_type.
SEGMENT_TRACK_EVENTS = {
    "Product Viewed": "product_view",
    "Scrolled": "scroll",
    "Element Clicked": "click",
    "Products Searched": "search",
    "Product Added": "cart_add",
    "Product Added to Wishlist": "wishlist_add",
    "Order Completed": "purchase",
}
CONSENT_SCOPES = ("analytics", "marketing", "personalization")
_SEGMENT_TOP_LEVEL = {
    "type",
    "event",
    "name",
    "messageId",
    "anonymousId",
    "userId",
    "timestamp",
    "sentAt",
    "receivedAt",
    "originalTimestamp",
    "context",
    "properties",
    "traits",
    "integrations",
    "previousId",
    "version",
    "channel",
    "writeKey",
    "category",
}
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


@dataclass(frozen=True)
class Limits:
    """What bronze refuses on sight (INTENTLAKE_MAX_RECORD_BYTES, _MAX_CLOCK_SKEW, _MAX_EVENT_AGE)."""

    max_record_bytes: int = 1_048_576
    max_clock_skew_s: int = 3_600  # occurred_at may be this far after received_at (client clocks drift)
    max_event_age_s: int = 30 * 86_400  # ... and this far before it (offline SDK queues)
    max_depth: int = 32  # nesting of objects and arrays in one record


class RejectedEvent(Exception):
    """A line that cannot become a canonical event; carries the quarantine reason and a detail."""

    def __init__(self, reason: Reason, detail: str, event_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.event_id = event_id


# A compiled (Rust) validator: Python's jsonschema cost ~1 ms per event, 90% of bronze's CPU time.
_VALIDATOR = jsonschema_rs.validator_for(canonical_event_schema(SCHEMA_VERSION))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_timestamp(value: Any, field: str) -> str:
    """An ISO 8601 string or epoch milliseconds -> RFC 3339 UTC string; naive times are read as UTC."""
    if isinstance(value, bool) or value is None:
        raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: missing or not a time ({value!r})")
    if isinstance(value, int | float):
        if not _MIN_EPOCH_MS <= value < _MAX_EPOCH_MS:
            raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: epoch milliseconds {value!r} outside 2000-2100")
        return _iso(datetime.fromtimestamp(value / 1000, tz=UTC))
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise RejectedEvent(Reason.BAD_TIMESTAMP, f"{field}: {value[:60]!r} is not an ISO 8601 time") from None
        return _iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    raise RejectedEvent(
        Reason.BAD_TIMESTAMP, f"{field}: expected ISO 8601 text or epoch ms, got {type(value).__name__}"
    )


def _text(value: Any) -> str | None:
    """A property value as text: strings as they are, numbers and booleans in JSON form, objects as JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


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


def from_segment(msg: dict) -> dict:
    """A Segment spec message (track, page, screen, identify, alias) -> canonical event."""
    kind = msg.get("type")
    event_id = msg.get("messageId") if isinstance(msg.get("messageId"), str) else None
    if kind == "track":
        name = msg.get("event")
        if name not in SEGMENT_TRACK_EVENTS:
            raise RejectedEvent(
                Reason.SCHEMA_VIOLATION,
                f"event: Segment track event {str(name)[:60]!r} is not one of {sorted(SEGMENT_TRACK_EVENTS)}",
                event_id,
            )
        event_type = SEGMENT_TRACK_EVENTS[name]
    elif kind in ("page", "screen"):
        event_type = "page_view"
    elif kind in ("identify", "alias"):
        event_type = "identify"
    else:
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION,
            f"type: Segment call {str(kind)[:40]!r} is not supported (track, page, screen, identify, alias)",
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
    location = context.get("location") if isinstance(context.get("location"), dict) else {}
    user_id = msg.get("userId")
    anonymous_id = msg.get("anonymousId")
    if anonymous_id is None and isinstance(user_id, str) and user_id:
        anonymous_id = f"uid:{user_id}"  # server-side calls often carry only the login
    library = context.get("library") if isinstance(context.get("library"), dict) else {}
    return {
        "event_id": event_id,
        "event_type": event_type,
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
        "source": {"kind": "segment", "sdk": library.get("name"), "version": library.get("version")},
        "schema_version": SCHEMA_VERSION,
    }


def from_web_sdk(payload: dict) -> dict:
    """A raw web SDK payload (epoch-ms times; clicks with x, y, button_id) -> canonical event."""
    event_id = payload.get("eid") if isinstance(payload.get("eid"), str) else None
    kind = payload.get("kind")
    if kind not in WEB_SDK_KINDS:
        raise RejectedEvent(
            Reason.SCHEMA_VIOLATION,
            f"kind: web SDK event kind {str(kind)[:40]!r} is not one of {sorted(WEB_SDK_KINDS)}",
            event_id,
        )
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
        "event_type": WEB_SDK_KINDS[kind],
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
        "source": {"kind": "web_sdk", "sdk": payload.get("sdk"), "version": payload.get("sdk_version")},
        "schema_version": SCHEMA_VERSION,
    }


ADAPTERS = {"segment": from_segment, "web_sdk": from_web_sdk}


def detect_source(obj: dict) -> str:
    """Which adapter understands this object, judged by the fields each format always carries."""
    if "type" in obj and ("messageId" in obj or "anonymousId" in obj or "userId" in obj or "event" in obj):
        return "segment"
    if "eid" in obj or ("sdk" in obj and "kind" in obj):
        return "web_sdk"
    keys = ", ".join(sorted(str(k) for k in obj)[:8])
    raise RejectedEvent(Reason.UNKNOWN_SOURCE, f"no adapter recognises an object with fields [{keys}]")


def validate(event: dict) -> None:
    """Check a canonical event against the v1 JSON Schema; the error names the field and the problem."""
    if _VALIDATOR.is_valid(event):
        return
    error = next(iter(_VALIDATOR.iter_errors(event)))
    where = ".".join(str(p) for p in error.instance_path) or "(event)"
    message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
    raise RejectedEvent(Reason.SCHEMA_VIOLATION, f"{where}: {message}", event.get("event_id"))


DEFAULT_LIMITS = Limits()


def _check_times(event: dict, limits: Limits) -> None:
    occurred = datetime.fromisoformat(event["occurred_at"])
    received = datetime.fromisoformat(event["received_at"])
    ahead = (occurred - received).total_seconds()
    when = f"occurred_at {event['occurred_at']} is"
    if ahead > limits.max_clock_skew_s:
        detail = f"{when} {ahead / 3600:.1f} h after received_at (limit {limits.max_clock_skew_s / 3600:g} h)"
        raise RejectedEvent(Reason.FUTURE_TIMESTAMP, detail, event["event_id"])
    if -ahead > limits.max_event_age_s:
        detail = f"{when} {-ahead / 86400:.1f} days before received_at (limit {limits.max_event_age_s / 86400:g} days)"
        raise RejectedEvent(Reason.STALE_TIMESTAMP, detail, event["event_id"])


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


def normalize_line(line: str, limits: Limits = DEFAULT_LIMITS) -> dict:
    """One NDJSON line -> a validated canonical event, or RejectedEvent with the quarantine reason."""
    size = len(line.encode("utf-8", "surrogatepass"))
    if size > limits.max_record_bytes:
        raise RejectedEvent(Reason.OVERSIZE, f"record is {size:,} bytes; the limit is {limits.max_record_bytes:,}")
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise RejectedEvent(Reason.MALFORMED_JSON, f"not valid JSON: {exc}"[:200]) from None
    if not isinstance(obj, dict):
        raise RejectedEvent(Reason.NOT_AN_OBJECT, f"expected a JSON object, got a JSON {type(obj).__name__}")
    if _depth_exceeds(obj, limits.max_depth):
        raise RejectedEvent(Reason.SCHEMA_VIOLATION, f"(event): objects and arrays nest deeper than {limits.max_depth}")
    event = ADAPTERS[detect_source(obj)](obj)
    validate(event)
    _check_times(event, limits)
    return event
