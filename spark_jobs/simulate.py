"""Realistic, seeded behaviour events for the landing zone, with the ground truth beside them.

Users have a persona (bouncer, browser, comparison shopper, price-sensitive, high-intent buyer), a home
city and time zone, one device and one front end that speaks either the Segment spec or the raw web
SDK shape. Each visits in bursts (sessions) whose start times follow a diurnal rhythm in the user's
local time; inside a session events are seconds to a few minutes apart, between sessions at least
30 minutes. Delivery is imperfect on purpose: some events are resent (duplicates), some arrive
minutes late, and some lines are malformed. Everything injected is recorded in the truth folder so the
pipeline can be checked against it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from spark_jobs.bronze.normalize import SEGMENT_TRACK_EVENTS
from spark_jobs.bronze.normalize import WEB_SDK_KINDS as RAW_WEB_SDK_KINDS

# (city, country, IANA zone, lat, lon, locale)
CITIES = [
    ("New York", "US", "America/New_York", 40.71, -74.01, "en-US"),
    ("Chicago", "US", "America/Chicago", 41.88, -87.63, "en-US"),
    ("Los Angeles", "US", "America/Los_Angeles", 34.05, -118.24, "en-US"),
    ("Toronto", "CA", "America/Toronto", 43.65, -79.38, "en-CA"),
    ("Mexico City", "MX", "America/Mexico_City", 19.43, -99.13, "es-MX"),
    ("Sao Paulo", "BR", "America/Sao_Paulo", -23.55, -46.63, "pt-BR"),
    ("London", "GB", "Europe/London", 51.51, -0.13, "en-GB"),
    ("Berlin", "DE", "Europe/Berlin", 52.52, 13.40, "de-DE"),
    ("Paris", "FR", "Europe/Paris", 48.86, 2.35, "fr-FR"),
    ("Madrid", "ES", "Europe/Madrid", 40.42, -3.70, "es-ES"),
    ("Lagos", "NG", "Africa/Lagos", 6.52, 3.38, "en-NG"),
    ("Mumbai", "IN", "Asia/Kolkata", 19.08, 72.88, "en-IN"),
    ("Tokyo", "JP", "Asia/Tokyo", 35.68, 139.69, "ja-JP"),
    ("Sydney", "AU", "Australia/Sydney", -33.87, 151.21, "en-AU"),
]
CITY_WEIGHTS = [14, 7, 9, 5, 5, 6, 10, 8, 6, 5, 3, 8, 6, 4]

DEVICES = {
    "mobile": [
        (
            "iOS",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 18_2 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/18.2 Mobile/15E148 Safari/604.1",
        ),
        (
            "Android",
            "Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/142.0.0.0 Mobile Safari/537.36",
        ),
    ],
    "desktop": [
        (
            "Windows",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/142.0.0.0 Safari/537.36",
        ),
        (
            "macOS",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/18.1 Safari/605.1.15",
        ),
    ],
    "tablet": [
        (
            "iPadOS",
            "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            "Version/18.1 Mobile/15E148 Safari/604.1",
        ),
    ],
}

# Local-hour weights of a session start: quiet nights, a lunch bump, an evening peak.
HOUR_WEIGHTS = [
    1,
    0.5,
    0.3,
    0.2,
    0.2,
    0.4,
    1,
    2,
    3,
    3.5,
    3.5,
    4,
    5,
    4.5,
    3.5,
    3.5,
    4,
    4.5,
    5,
    6.5,
    7,
    6,
    4,
    2,
]

SEARCH_TERMS = [
    "running shoes",
    "rain jacket",
    "wireless earbuds",
    "coffee grinder",
    "desk lamp",
    "yoga mat",
    "backpack",
    "smart watch",
    "sofa",
    "winter boots",
]
REFINEMENTS = ["cheap", "under 50", "sale", "black", "waterproof", "best rated", "size 42"]
BUTTONS = ["add_to_cart", "size_picker", "image_zoom", "reviews_tab", "promo_banner", "nav_menu"]
CATEGORIES = ["shoes", "outdoor", "audio", "kitchen", "home", "sports", "bags", "wearables"]
HOST = "https://shop.example.com"


@dataclass(frozen=True)
class Persona:
    weight: float
    sessions: tuple[int, int]  # per day, inclusive
    events: tuple[int, int]  # per session, inclusive
    gap: tuple[float, float]  # seconds between events in a session (log-uniform)
    p: dict[str, float]  # next-action probabilities after the landing page
    p_purchase_after_cart: float
    product_pool: int  # distinct products the persona looks at per session (small = repeat views)


PERSONAS: dict[str, Persona] = {
    "bouncer": Persona(0.24, (1, 1), (1, 3), (2, 25), {"scroll": 0.6, "page_view": 0.3, "click": 0.1}, 0.0, 3),
    "browser": Persona(
        0.30,
        (1, 3),
        (4, 18),
        (5, 90),
        {
            "page_view": 0.3,
            "product_view": 0.25,
            "scroll": 0.3,
            "click": 0.1,
            "search": 0.04,
            "cart_add": 0.01,
        },
        0.15,
        12,
    ),
    "comparison_shopper": Persona(
        0.16,
        (2, 4),
        (10, 30),
        (8, 150),
        {
            "product_view": 0.45,
            "scroll": 0.25,
            "search": 0.1,
            "page_view": 0.08,
            "click": 0.08,
            "wishlist_add": 0.03,
            "cart_add": 0.01,
        },
        0.25,
        4,
    ),
    "price_sensitive": Persona(
        0.15,
        (1, 3),
        (6, 22),
        (2, 40),
        {
            "search": 0.25,
            "scroll": 0.35,
            "product_view": 0.25,
            "page_view": 0.07,
            "click": 0.06,
            "cart_add": 0.02,
        },
        0.2,
        8,
    ),
    "high_intent_buyer": Persona(
        0.15,
        (1, 2),
        (6, 20),
        (10, 200),
        {
            "product_view": 0.4,
            "scroll": 0.2,
            "click": 0.12,
            "cart_add": 0.15,
            "page_view": 0.05,
            "search": 0.05,
            "wishlist_add": 0.03,
        },
        0.7,
        5,
    ),
}

# The simulator speaks each format with the adapters' own vocabularies (one source of truth).
WEB_SDK_KINDS = {canonical: raw for raw, canonical in RAW_WEB_SDK_KINDS.items()}
SEGMENT_EVENTS = {canonical: name for name, canonical in SEGMENT_TRACK_EVENTS.items()}
MALFORMED_KINDS = (
    "truncated_json",
    "not_json",
    "json_array",
    "unknown_shape",
    "missing_anonymous_id",
    "bad_timestamp",
)
EXPECTED_REASON = {
    "truncated_json": "malformed_json",
    "not_json": "malformed_json",
    "json_array": "not_an_object",
    "unknown_shape": "unknown_source",
    "missing_anonymous_id": "schema_violation",
    "bad_timestamp": "bad_timestamp",
}
MAX_IN_SESSION_GAP_S = 270.0  # under the default 5-minute idle timeout, so truth is unambiguous
MIN_SESSION_SEPARATION_S = 30 * 60


@dataclass
class SimulationSummary:
    """What `simulate` wrote: counts an end-to-end check can compare the tables with."""

    events: int = 0
    lines: int = 0
    duplicates: int = 0
    late: int = 0
    malformed: int = 0
    malformed_by_reason: dict[str, int] = field(default_factory=dict)
    users: int = 0
    sessions: int = 0
    conversions: int = 0
    files: int = 0
    landing: str = ""
    truth: str = ""


@dataclass
class _User:
    anonymous_id: str
    user_id: str | None
    persona: str
    city: tuple
    device_type: str
    os: str
    user_agent: str
    source_kind: str  # segment | web_sdk
    sends_session_id: bool
    ip: str
    consent: list[str]
    counts_sessions: bool = False  # its client session ids are 1, 2, 3 ... (shared with other devices)


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _new_id(rng: random.Random, prefix: str) -> str:
    return f"{prefix}{uuid.UUID(int=rng.getrandbits(128), version=4).hex}"


def _make_user(rng: random.Random) -> _User:
    persona = rng.choices(list(PERSONAS), weights=[p.weight for p in PERSONAS.values()])[0]
    device_type = rng.choices(["mobile", "desktop", "tablet"], weights=[55, 35, 10])[0]
    os_name, ua = rng.choice(DEVICES[device_type])
    source_kind = rng.choice(["segment", "web_sdk"])
    consent = ["analytics"] + [s for s in ("marketing", "personalization") if rng.random() < 0.7]
    return _User(
        anonymous_id=_new_id(rng, "a-"),
        user_id=f"u-{rng.randrange(10**7):07d}"
        if rng.random() < (0.7 if persona == "high_intent_buyer" else 0.35)
        else None,
        persona=persona,
        city=rng.choices(CITIES, weights=CITY_WEIGHTS)[0],
        device_type=device_type,
        os=os_name,
        user_agent=ua,
        source_kind=source_kind,
        sends_session_id=source_kind == "web_sdk" and rng.random() < 0.6,
        ip=f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        consent=consent,
    )


def _make_realistic(rng: random.Random, user: _User) -> None:
    """Turn some users into Snowplow or server-side sources, and some SDKs into session counters."""
    draw = rng.random()
    if draw < SNOWPLOW_SHARE:
        user.source_kind, user.sends_session_id = "snowplow", True
    elif draw < SNOWPLOW_SHARE + SERVER_SHARE:
        user.source_kind, user.sends_session_id = "server", False
        user.user_id = user.user_id or f"u-{rng.randrange(10**7):07d}"
        user.anonymous_id = f"uid:{user.user_id}"  # what bronze keys a call without anonymousId by
    user.counts_sessions = user.source_kind == "web_sdk" and user.sends_session_id and rng.random() < COUNTER_SID_SHARE


def _with_custom_events(rng: random.Random, user: _User, events: list[dict]) -> list[dict]:
    """A few custom events between a session's events (a second after the one before: the session's shape
    stays); a server source's events all carry the login."""
    out: list[dict] = []
    for i, e in enumerate(events):
        out.append(e)
        if i < len(events) - 1 and rng.random() < CUSTOM_EVENT_RATE:
            name = rng.choice(CUSTOM_EVENTS)
            out.append({"type": "custom", "name": name, "t": e["t"] + timedelta(seconds=1), "path": e["path"],
                        "props": {"label": name.split(" ")[0].lower()}, "user_id": e["user_id"]})  # fmt: skip
    if user.source_kind == "server":
        for e in out:
            e["user_id"] = user.user_id
    return out


def _session_starts(rng: random.Random, user: _User, day: date, count: int, days: int = 1) -> list[datetime]:
    """UTC start times on `day` or one of the `days` - 1 days after it (local calendar days of the user),
    diurnal, well separated."""
    zone = ZoneInfo(user.city[2])
    starts: list[datetime] = []
    for _ in range(count):
        if days > 1:  # one day draws nothing here, so single-day output stays byte-identical
            day_of = day + timedelta(days=rng.randrange(days))
        else:
            day_of = day
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
        local = datetime(
            day_of.year,
            day_of.month,
            day_of.day,
            hour,
            rng.randrange(60),
            rng.randrange(60),
            rng.randrange(1000) * 1000,
            tzinfo=zone,
        )
        starts.append(local.astimezone(UTC))
    starts.sort()
    return starts


def _session_events(rng: random.Random, user: _User, persona: Persona, start: datetime) -> list[dict]:
    """One session's events as canonical-ish dicts (type, time, page, props), in event-time order."""
    n = rng.randint(*persona.events)
    products = [f"p-{rng.randrange(2000):04d}" for _ in range(persona.product_pool)]
    category = rng.choice(CATEGORIES)
    entry = rng.choice(["/", f"/category/{category}", f"/product/{products[0]}", "/deals"])
    referrer = rng.choice(["https://www.google.com/", "https://www.instagram.com/", "", "https://news.example.org/"])
    events: list[dict] = [{"type": "page_view", "t": start, "path": entry, "props": {}, "ref": referrer}]
    t, scroll, query, in_cart = start, 0, None, []
    # A known user is either logged in from the first event or logs in part-way through (identify).
    logged_in_at: int | None = None
    if user.user_id:
        logged_in_at = 0 if rng.random() < 0.5 else rng.randrange(1, max(2, n))
    path = entry
    actions, weights = zip(*persona.p.items(), strict=True)
    for i in range(1, n):
        t = t + timedelta(seconds=min(_log_uniform(rng, *persona.gap), MAX_IN_SESSION_GAP_S))
        if logged_in_at == i and i > 0:
            events.append({"type": "identify", "t": t, "path": path, "props": {"email": _email(user.user_id)}})
            continue
        action = rng.choices(actions, weights=weights)[0]
        props: dict[str, str] = {}
        if action == "page_view":
            path = rng.choice([f"/category/{category}", "/", "/deals", f"/category/{rng.choice(CATEGORIES)}"])
            scroll = 0
        elif action == "product_view":
            product = rng.choice(products)
            path, scroll = f"/product/{product}", 0
            props = {"product_id": product, "price": f"{rng.uniform(9, 300):.2f}"}
        elif action == "scroll":
            step = rng.randint(25, 60) if user.persona == "price_sensitive" else rng.randint(5, 30)
            scroll = min(100, scroll + step)
            props = {"scroll_depth": str(scroll)}
        elif action == "click":
            props = {
                "button_id": rng.choice(BUTTONS),
                "x": str(rng.randrange(1440)),
                "y": str(rng.randrange(900)),
            }
        elif action == "search":
            base = query.split(" ")[0] if query and rng.random() < 0.6 else rng.choice(SEARCH_TERMS)
            query = f"{base} {rng.choice(REFINEMENTS)}" if query and rng.random() < 0.6 else base
            path = "/search"
            props = {"query": query}
        elif action in ("cart_add", "wishlist_add"):
            product = path.rsplit("/", 1)[-1] if path.startswith("/product/") else rng.choice(products)
            props = {"product_id": product, "quantity": "1"}
            if action == "cart_add":
                in_cart.append(product)
        events.append({"type": action, "t": t, "path": path, "props": props})
    if in_cart and rng.random() < persona.p_purchase_after_cart:
        t = t + timedelta(seconds=rng.uniform(20, 120))
        events.append(
            {
                "type": "purchase",
                "t": t,
                "path": "/checkout/complete",
                "props": {
                    "order_id": _new_id(rng, "o-"),
                    "products": ",".join(in_cart),
                    "revenue": f"{rng.uniform(20, 600):.2f}",
                },
            }
        )
    for i, e in enumerate(events):
        e["user_id"] = user.user_id if logged_in_at is not None and i >= logged_in_at else None
    return events


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _epoch_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def render_segment(user: _User, e: dict, event_id: str, received: datetime) -> dict:
    """One event as a Segment spec message (track, page or identify)."""
    city, country, zone, lat, lon, locale = user.city
    context = {
        "ip": user.ip,
        "locale": locale,
        "timezone": zone,
        "userAgent": user.user_agent,
        "page": {"url": HOST + e["path"], "path": e["path"], "referrer": e.get("ref", "")},
        "device": {"type": user.device_type},
        "os": {"name": user.os},
        "location": {"latitude": lat, "longitude": lon, "country": country, "city": city},
        "library": {"name": "analytics.js", "version": "5.2.0"},
        "consent": {
            "categoryPreferences": {s: s in user.consent for s in ("analytics", "marketing", "personalization")}
        },
    }
    msg: dict = {
        "messageId": event_id,
        "anonymousId": user.anonymous_id,
        "userId": e["user_id"],
        "timestamp": _iso(e["t"]),
        "sentAt": _iso(e["t"] + timedelta(milliseconds=40)),
        "receivedAt": _iso(received),
        "context": context,
    }
    if e["type"] == "page_view":
        msg.update(type="page", name=e["path"].strip("/").split("/")[0] or "home", properties={"title": "Shop"})
    elif e["type"] == "identify":
        msg.update(type="identify", userId=user.user_id, traits={"plan": "member", "email": _email(user.user_id)})
    else:
        msg.update(type="track", event=e.get("name") or SEGMENT_EVENTS[e["type"]], properties=e["props"])
    return msg


def _email(user_id: str) -> str:
    """A login's email address (the reserved example.com domain: nothing real is ever addressed)."""
    return f"{user_id}@example.com"


def render_web_sdk(user: _User, e: dict, event_id: str, received: datetime, session_id: str | None) -> dict:
    """One event in the raw web SDK shape (epoch-ms times, x / y / button_id clicks)."""
    city, country, zone, lat, lon, locale = user.city
    payload: dict = {
        "sdk": "intentlake-web",
        "sdk_version": "2.3.1",
        "kind": e["name"].lower().replace(" ", "_") if e["type"] == "custom" else WEB_SDK_KINDS[e["type"]],
        "eid": event_id,
        "ts": _epoch_ms(e["t"]),
        "recv_ts": _epoch_ms(received),
        "anon": user.anonymous_id,
        "uid": user.user_id if e["type"] == "identify" else e["user_id"],
        "sid": session_id,
        "url": HOST + e["path"],
        "ref": e.get("ref", ""),
        "ua": user.user_agent,
        "dev": user.device_type,
        "ip": user.ip,
        "lang": locale,
        "tz": zone,
        "geo": {"lat": lat, "lon": lon, "cc": country, "city": city},
        "consent": user.consent,
    }
    props = dict(e["props"])
    if e["type"] == "click":
        payload.update(x=int(props.pop("x")), y=int(props.pop("y")), button_id=props.pop("button_id"))
    payload["data"] = props
    return payload


# Realistic sources (simulate(..., realistic=True), what `make demo` sends): a share of users speak Snowplow
# (self-describing events with contexts), a share are server-side sources that send only track calls without
# a page, some SDKs number sessions 1, 2, 3 ... (so devices share client session ids), and sessions carry
# custom events the vocabulary does not map.
SNOWPLOW_SHARE, SERVER_SHARE, COUNTER_SID_SHARE, CUSTOM_EVENT_RATE = 0.15, 0.05, 0.4, 0.04
CUSTOM_EVENTS = ("Coupon Applied", "Video Played", "Newsletter Opened", "Size Guide Viewed")
SERVER_TRACK_NAMES = {"page_view": "Page Rendered", "scroll": "Content Scrolled", "click": "Element Clicked"}
_YAUAA_CLASS = {"mobile": "Phone", "desktop": "Desktop", "tablet": "Tablet"}
_SNOWPLOW_ECOMMERCE = "iglu:com.snowplowanalytics.snowplow.ecommerce/snowplow_ecommerce_action/jsonschema/1-0-2"
_SNOWPLOW_PRODUCT = "iglu:com.snowplowanalytics.snowplow.ecommerce/product/jsonschema/1-0-0"
_SNOWPLOW_TRANSACTION = "iglu:com.snowplowanalytics.snowplow.ecommerce/transaction/jsonschema/1-0-0"


def _snowplow_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _snowplow_unstruct(schema: str, data: dict) -> dict:
    vendor, name, _, version = schema.removeprefix("iglu:").split("/")
    column = f"unstruct_event_{vendor.replace('.', '_')}_{name}_{version.split('-')[0]}"
    return {"event": "unstruct", "event_vendor": vendor, "event_name": name, "event_format": "jsonschema",
            "event_version": version, column: data}  # fmt: skip


def render_snowplow(
    user: _User, e: dict, event_id: str, received: datetime, session_id: str, page_view_id: str
) -> dict:
    """One event as a Snowplow enriched event in the Analytics SDK's JSON form, with the web_page and yauaa
    contexts: pages are page_view, scrolls page_ping, clicks link_click, searches site_search, products, cart
    and orders the e-commerce action with product / transaction entities, logins a structured event, custom
    events a vendor's own schema."""
    city, country, zone, lat, lon, locale = user.city
    event: dict = {
        "app_id": "shop", "platform": "web", "event_id": event_id, "name_tracker": "sp", "v_tracker": "js-3.24.0",
        "collector_tstamp": _snowplow_time(received), "dvce_created_tstamp": _snowplow_time(e["t"]),
        "derived_tstamp": _snowplow_time(e["t"]), "domain_userid": user.anonymous_id, "domain_sessionid": session_id,
        "user_id": e["user_id"], "user_ipaddress": user.ip, "useragent": user.user_agent, "br_lang": locale,
        "os_timezone": zone, "geo_country": country, "geo_city": city, "geo_latitude": lat, "geo_longitude": lon,
        "page_url": HOST + e["path"], "page_urlpath": e["path"], "page_referrer": e.get("ref") or None,
        "contexts_com_snowplowanalytics_snowplow_web_page_1": [{"id": page_view_id}],
        "contexts_nl_basjes_yauaa_context_1": [{"deviceClass": _YAUAA_CLASS[user.device_type],
                                                "operatingSystemNameVersion": user.os}],
    }  # fmt: skip
    props, kind = e["props"], e["type"]
    product = {"id": props.get("product_id"), "price": float(props.get("price") or 0), "currency": "EUR"}
    if kind == "page_view":
        event["event"] = "page_view"
    elif kind == "scroll":
        event.update(event="page_ping", doc_height=4000, pp_yoffset_max=int(props["scroll_depth"]) * 40)
    elif kind == "click":
        event.update(_snowplow_unstruct("iglu:com.snowplowanalytics.snowplow/link_click/jsonschema/1-0-1",
                                        {"targetUrl": HOST + e["path"], "elementId": props["button_id"],
                                         "elementClasses": ["btn"]}))  # fmt: skip
    elif kind == "search":
        event.update(_snowplow_unstruct("iglu:com.snowplowanalytics.snowplow/site_search/jsonschema/1-0-0",
                                        {"terms": props["query"].split(" ")}))  # fmt: skip
    elif kind in ("product_view", "cart_add"):
        event.update(_snowplow_unstruct(_SNOWPLOW_ECOMMERCE, {"type": kind.replace("cart_add", "add_to_cart")}))
        event["contexts_com_snowplowanalytics_snowplow_ecommerce_product_1"] = [product]
    elif kind == "purchase":
        event.update(_snowplow_unstruct(_SNOWPLOW_ECOMMERCE, {"type": "transaction"}))
        event["contexts_com_snowplowanalytics_snowplow_ecommerce_transaction_1"] = [
            {"transaction_id": props["order_id"], "revenue": float(props["revenue"]), "currency": "EUR",
             "payment_method": "card", "total_quantity": len(props["products"].split(","))}]  # fmt: skip
        event["contexts_com_snowplowanalytics_snowplow_ecommerce_product_1"] = [
            {"id": p, "price": 0.0, "currency": "EUR"} for p in props["products"].split(",")
        ]
    elif kind == "wishlist_add":
        event.update(event="struct", se_category="product", se_action="add-to-wishlist", se_label=props["product_id"])
    elif kind == "identify":
        event.update(event="struct", se_category="auth", se_action="login", user_id=user.user_id)
    else:  # custom
        name = e["name"].lower().replace(" ", "_")
        event.update(_snowplow_unstruct(f"iglu:com.example.shop/{name}/jsonschema/1-0-0", dict(props)))
    return event


def render_server(user: _User, e: dict, event_id: str, received: datetime) -> dict:
    """One event as a server-side Segment source sends it: track calls (and identify) with the login only, no
    page, no user agent; pages and scrolls are the server's own custom names."""
    msg: dict = {"messageId": event_id, "userId": user.user_id, "timestamp": _iso(e["t"]),
                 "receivedAt": _iso(received), "context": {"library": {"name": "analytics-python",
                                                                       "version": "2.3.2"}}}  # fmt: skip
    if e["type"] == "identify":
        msg.update(type="identify", traits={"plan": "member", "email": _email(user.user_id)})
    else:
        name = e.get("name") or SERVER_TRACK_NAMES.get(e["type"]) or SEGMENT_EVENTS[e["type"]]
        msg.update(type="track", event=name, properties=e["props"])
    return msg


def _malformed_line(rng: random.Random, kind: str, sample: str, when: datetime) -> str:
    if kind == "truncated_json":
        return sample[: rng.randrange(5, max(6, len(sample) // 2))]
    if kind == "not_json":
        return rng.choice(["GET /favicon.ico HTTP/1.1", "<html><body>502 Bad Gateway</body></html>", "null event"])
    if kind == "json_array":
        return json.dumps([{"eid": "x"}, {"eid": "y"}])
    if kind == "unknown_shape":
        return json.dumps({"foo": "bar", "value": rng.randrange(100), "time": _iso(when)})
    if kind == "missing_anonymous_id":
        return json.dumps(
            {
                "type": "track",
                "event": "Product Viewed",
                "messageId": f"bad-{rng.getrandbits(40):x}",
                "timestamp": _iso(when),
                "properties": {"product_id": "p-0001"},
            }
        )
    return json.dumps(
        {
            "type": "track",
            "event": "Scrolled",
            "messageId": f"badts-{rng.getrandbits(40):x}",
            "anonymousId": "a-broken",
            "timestamp": "yesterday at noon",
            "properties": {},
        }
    )


def simulate(
    landing: Path,
    truth: Path,
    *,
    events: int = 200_000,
    seed: int = 7,
    day: date = date(2026, 11, 2),
    days: int = 1,
    duplicate_rate: float = 0.01,
    late_rate: float = 0.02,
    malformed_rate: float = 0.002,
    lines_per_file: int = 5_000,
    realistic: bool = False,
) -> SimulationSummary:
    """Write about `events` events as NDJSON files into `landing` and the ground truth into `truth`.

    realistic: also speak like real sources (Snowplow self-describing events with contexts, server-side
    track-only calls, session counters shared across devices, custom events); off, the input is the one
    the benchmarks and most tests were built on.

    The same arguments always produce byte-identical files (seeded; no wall-clock time is used).
    """
    if days < 1:
        raise ValueError(f"days must be 1 or more, got {days}")
    for name, rate in (
        ("duplicate_rate", duplicate_rate),
        ("late_rate", late_rate),
        ("malformed_rate", malformed_rate),
    ):
        if not 0 <= rate < 1:
            raise ValueError(f"{name} must be in [0, 1), got {rate}")
    rng = random.Random(seed)
    landing.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    summary = SimulationSummary(landing=str(landing), truth=str(truth))
    users: list[_User] = []
    deliveries: list[tuple[datetime, int, str]] = []  # (arrival, tiebreak, line)
    session_rows: list[dict] = []
    event_rows: list[tuple[str, str]] = []
    malformed_counts: Counter[str] = Counter()
    seq = 0

    def deliver(arrival: datetime, line: str) -> None:
        nonlocal seq
        seq += 1
        deliveries.append((arrival, seq, line))

    while summary.events < events:
        user = _make_user(rng)
        if realistic:
            _make_realistic(rng, user)
        users.append(user)
        persona = PERSONAS[user.persona]
        starts = _session_starts(rng, user, day, rng.randint(*persona.sessions), days)
        last_end: datetime | None = None
        for index, start in enumerate(starts, start=1):
            if last_end and start < last_end + timedelta(seconds=MIN_SESSION_SEPARATION_S):
                start = last_end + timedelta(seconds=MIN_SESSION_SEPARATION_S + rng.uniform(0, 3600))
            session_events = _session_events(rng, user, persona, start)
            if realistic:
                session_events = _with_custom_events(rng, user, session_events)
            last_end = session_events[-1]["t"]
            true_sid = _new_id(rng, "s-")
            client_sid = true_sid if user.sends_session_id else None
            if client_sid and user.counts_sessions:
                client_sid = str(index)  # another device's session 1 has the same id
            converted = any(e["type"] == "purchase" for e in session_events)
            session_rows.append(
                {
                    "true_session_id": true_sid,
                    "anonymous_id": user.anonymous_id,
                    "persona": user.persona,
                    "start": _iso(start),
                    "end": _iso(last_end),
                    "event_count": len(session_events),
                    "converted": converted,
                    "client_session_id": client_sid or "",
                }
            )
            page_view_id = None
            for e in session_events:
                event_id = _new_id(rng, "e-")
                if user.source_kind == "snowplow" and (page_view_id is None or e["type"] == "page_view"):
                    page_view_id = _new_id(rng, "pv-")
                    if e["type"] == "page_view":
                        event_id = page_view_id  # Snowplow keys a page view by its page view id
                is_late = rng.random() < late_rate
                delay = timedelta(minutes=rng.uniform(2, 30)) if is_late else timedelta(seconds=rng.uniform(0.05, 2))
                received = e["t"] + delay
                if user.source_kind == "segment":
                    payload = render_segment(user, e, event_id, received)
                elif user.source_kind == "snowplow":
                    payload = render_snowplow(user, e, event_id, received, client_sid, page_view_id)
                elif user.source_kind == "server":
                    payload = render_server(user, e, event_id, received)
                else:
                    payload = render_web_sdk(user, e, event_id, received, client_sid)
                line = json.dumps(payload, separators=(",", ":"))
                deliver(received, line)
                summary.late += is_late
                if rng.random() < duplicate_rate:  # an SDK retry: the same bytes, a little later
                    deliver(received + timedelta(seconds=rng.uniform(1, 180)), line)
                    summary.duplicates += 1
                if rng.random() < malformed_rate:
                    kind = rng.choice(MALFORMED_KINDS)
                    deliver(received, _malformed_line(rng, kind, line, e["t"]))
                    malformed_counts[EXPECTED_REASON[kind]] += 1
                event_rows.append((event_id, true_sid))
                summary.events += 1
            summary.conversions += converted
        summary.sessions += len(starts)

    deliveries.sort()
    summary.lines = len(deliveries)
    summary.users = len(users)
    summary.malformed = sum(malformed_counts.values())
    summary.malformed_by_reason = dict(sorted(malformed_counts.items()))
    existing = len(list(landing.glob("events-*.ndjson")))
    # Spark's file source takes files in modification-time order. Written within the same millisecond,
    # a later file could be taken first and move bronze's watermark past an earlier one, so each file is
    # stamped 1 ms after the previous: files land in arrival order, as they would from a collector.
    landed_ns = time.time_ns()
    for n, offset in enumerate(range(0, len(deliveries), lines_per_file)):
        chunk = deliveries[offset : offset + lines_per_file]
        name = f"events-{seed}-{existing + n:05d}.ndjson"
        tmp = landing / f".{name}.tmp"  # dot-files are invisible to Spark's file source until renamed
        tmp.write_text("".join(line + "\n" for _, _, line in chunk))
        stamp = landed_ns + n * 1_000_000
        os.utime(tmp, ns=(stamp, stamp))
        os.replace(tmp, landing / name)
        summary.files += 1

    with open(truth / "users.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "anonymous_id",
                "user_id",
                "persona",
                "city",
                "timezone",
                "device_type",
                "source_kind",
                "sends_session_id",
            ]
        )
        for u in users:
            writer.writerow(
                [
                    u.anonymous_id,
                    u.user_id or "",
                    u.persona,
                    u.city[0],
                    u.city[2],
                    u.device_type,
                    u.source_kind,
                    u.sends_session_id,
                ]
            )
    with open(truth / "sessions.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(session_rows[0]))
        writer.writeheader()
        writer.writerows(session_rows)
    with open(truth / "events.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_id", "true_session_id"])
        writer.writerows(event_rows)
    (truth / "summary.json").write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary
