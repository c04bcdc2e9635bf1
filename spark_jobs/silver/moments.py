"""Micro-moments: in-session triggers found in one session's events, each with its evidence.

Pure Python over a session's events in event-time order, so each detector is unit-tested on small
sequences; silver applies `detect` to every recomputed session. Thresholds come from
config/micro_moments.yaml (`load_thresholds`); nothing here is tuned in code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from spark_jobs.errors import InvalidConfigError

MOMENT_TYPES = (
    "rapid_scroll_burst",
    "search_refinement",
    "repeat_product_view",
    "location_shift",
    "cart_abandonment_risk",
    "ad_fatigue",
)
FAILED_PAYMENT = ("failed", "declined", "error")


@dataclass(frozen=True)
class Thresholds:
    scroll_min_scrolls: int
    scroll_max_gap_seconds: float
    scroll_min_depth_step: float
    search_max_gap_seconds: float
    repeat_min_views: int
    repeat_window_seconds: float
    location_min_km: float
    abandonment_idle_seconds: float
    ad_min_taps: int
    ad_window_seconds: float
    ad_min_failed_purchases: int


_KEYS = {  # field -> (section, key) in config/micro_moments.yaml
    "scroll_min_scrolls": ("rapid_scroll_burst", "min_scrolls"),
    "scroll_max_gap_seconds": ("rapid_scroll_burst", "max_gap_seconds"),
    "scroll_min_depth_step": ("rapid_scroll_burst", "min_depth_step"),
    "search_max_gap_seconds": ("search_refinement", "max_gap_seconds"),
    "repeat_min_views": ("repeat_product_view", "min_views"),
    "repeat_window_seconds": ("repeat_product_view", "window_seconds"),
    "location_min_km": ("location_shift", "min_km"),
    "abandonment_idle_seconds": ("cart_abandonment_risk", "idle_seconds"),
    "ad_min_taps": ("ad_fatigue", "min_ad_taps"),
    "ad_window_seconds": ("ad_fatigue", "window_seconds"),
    "ad_min_failed_purchases": ("ad_fatigue", "min_failed_purchases"),
}


def load_thresholds(path: Path) -> Thresholds:
    """config/micro_moments.yaml -> Thresholds; a missing or non-positive value names the section and key."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidConfigError(path, "(file)", f"cannot be read as YAML ({exc})") from None
    unknown = sorted(set(raw) - set(MOMENT_TYPES))
    if unknown:
        raise InvalidConfigError(path, ", ".join(unknown), f"unknown micro-moment; known: {list(MOMENT_TYPES)}")
    values: dict[str, Any] = {}
    for f in fields(Thresholds):
        section, key = _KEYS[f.name]
        value = (raw.get(section) or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise InvalidConfigError(path, f"{section}.{key}", f"needs a positive number, got {value!r}")
        if f.type == "int" and not float(value).is_integer():
            raise InvalidConfigError(path, f"{section}.{key}", f"needs a whole number, got {value!r}")
        values[f.name] = int(value) if f.type == "int" else float(value)
    return Thresholds(**values)


@dataclass(frozen=True)
class Moment:
    moment_type: str
    detected_at: datetime  # event time of the event that completed the pattern
    event_ids: tuple[str, ...]
    evidence: dict[str, str]


def _prop(event: dict, key: str) -> str | None:
    props = event.get("properties") or {}
    return props.get(key)


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def scroll_depth(event: dict) -> float | None:
    """An event's scroll depth, a percentage: text that is not a number, NaN, infinities and values outside
    0-100 are no depth. silver.sessions' max_scroll_depth and scroll_velocity read it by the same rule."""
    depth = _number(_prop(event, "scroll_depth"))
    return depth if depth is not None and 0 <= depth <= 100 else None


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def rapid_scroll_bursts(events: list[dict], t: Thresholds) -> list[Moment]:
    """Runs of min_scrolls+ scrolls, each within max_gap of the previous and min_depth_step deeper."""
    moments, run = [], []

    def flush() -> None:
        if len(run) >= t.scroll_min_scrolls:
            depths = [scroll_depth(e) for e in run]
            span = _seconds(run[0]["occurred_at"], run[-1]["occurred_at"])
            moments.append(Moment("rapid_scroll_burst", run[-1]["occurred_at"], tuple(e["event_id"] for e in run),
                                  {"scrolls": str(len(run)), "from_depth": f"{depths[0]:g}",
                                   "to_depth": f"{depths[-1]:g}", "seconds": f"{span:.1f}"}))  # fmt: skip

    for event in events:
        if event["event_type"] != "scroll":
            continue  # other events between scrolls do not break a burst; the time gap does
        depth = scroll_depth(event)
        if depth is None:
            continue
        if run:
            previous = run[-1]
            gap = _seconds(previous["occurred_at"], event["occurred_at"])
            step = depth - scroll_depth(previous)
            if gap > t.scroll_max_gap_seconds or step < t.scroll_min_depth_step:
                flush()
                run = []
        run.append(event)
    flush()
    return moments


def _terms(query: str) -> set[str]:
    return {word for word in query.lower().split() if word}


def search_refinements(events: list[dict], t: Thresholds) -> list[Moment]:
    """A search that narrows (adds words to) or rewords (shares a word with) the previous one, soon after."""
    moments, previous = [], None
    for event in events:
        if event["event_type"] != "search" or not _prop(event, "query"):
            continue
        query = _prop(event, "query")
        if previous is not None:
            before = _prop(previous, "query")
            gap = _seconds(previous["occurred_at"], event["occurred_at"])
            shared = _terms(before) & _terms(query)
            if gap <= t.search_max_gap_seconds and shared and _terms(before) != _terms(query):
                kind = "narrowed" if _terms(before) < _terms(query) else "reworded"
                moments.append(Moment("search_refinement", event["occurred_at"],
                                      (previous["event_id"], event["event_id"]),
                                      {"from_query": before, "to_query": query, "kind": kind,
                                       "seconds": f"{gap:.1f}"}))  # fmt: skip
        previous = event
    return moments


def repeat_product_views(events: list[dict], t: Thresholds) -> list[Moment]:
    """The same product viewed min_views times within the window (one moment per product and streak)."""
    moments, views = [], {}
    for event in events:
        product = _prop(event, "product_id")
        if event["event_type"] != "product_view" or not product:
            continue
        recent = [
            e
            for e in views.get(product, [])
            if _seconds(e["occurred_at"], event["occurred_at"]) <= t.repeat_window_seconds
        ]
        recent.append(event)
        if len(recent) >= t.repeat_min_views:
            span = _seconds(recent[0]["occurred_at"], event["occurred_at"])
            evidence = {"product_id": product, "views": str(len(recent)), "seconds": f"{span:.1f}"}
            ids = tuple(e["event_id"] for e in recent)
            moments.append(Moment("repeat_product_view", event["occurred_at"], ids, evidence))
            recent = []  # the next streak starts afresh
        views[product] = recent
    return moments


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine, mean Earth radius)."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def location_shifts(events: list[dict], t: Thresholds) -> list[Moment]:
    """Consecutive known positions in the session at least min_km apart."""
    moments, previous = [], None
    for event in events:
        lat, lon = _number(event.get("lat")), _number(event.get("lon"))
        if lat is None or lon is None:
            continue
        if previous is not None:
            km = _km((previous["lat"], previous["lon"]), (lat, lon))
            if km >= t.location_min_km:
                moments.append(Moment("location_shift", event["occurred_at"], (previous["event_id"], event["event_id"]),
                                      {"km": f"{km:.1f}", "from": f"{previous['lat']:.3f},{previous['lon']:.3f}",
                                       "to": f"{lat:.3f},{lon:.3f}"}))  # fmt: skip
        previous = {**event, "lat": lat, "lon": lon}
    return moments


def cart_abandonment_risk(events: list[dict], t: Thresholds, watermark: datetime | None) -> list[Moment]:
    """Cart adds, no purchase after the last of them, and the session quiet for idle_seconds by the watermark."""
    adds = [e for e in events if e["event_type"] == "cart_add"]
    if not adds or watermark is None:
        return []
    last_add = adds[-1]
    if any(e["event_type"] == "purchase" and e["occurred_at"] >= last_add["occurred_at"] for e in events):
        return []
    quiet = _seconds(events[-1]["occurred_at"], watermark)
    if quiet < t.abandonment_idle_seconds:
        return []
    products = sorted({p for p in (_prop(e, "product_id") for e in adds) if p})
    return [Moment("cart_abandonment_risk", last_add["occurred_at"], tuple(e["event_id"] for e in adds),
                   {"cart_adds": str(len(adds)), "products": ",".join(products),
                    "quiet_seconds": f"{quiet:.0f}"})]  # fmt: skip


def _is_ad_tap(event: dict) -> bool:
    if event["event_type"] != "click":
        return False
    target = (_prop(event, "button_id") or "").lower()
    return _prop(event, "element_type") == "ad" or target.startswith(("ad_", "ad-", "banner_ad"))


def ad_fatigue(events: list[dict], t: Thresholds) -> list[Moment]:
    """min_ad_taps ad taps within the window, or min_failed_purchases failed purchases in the session."""
    moments, taps = [], []
    for event in events:
        if not _is_ad_tap(event):
            continue
        taps = [e for e in taps if _seconds(e["occurred_at"], event["occurred_at"]) <= t.ad_window_seconds]
        taps.append(event)
        if len(taps) >= t.ad_min_taps:
            span = _seconds(taps[0]["occurred_at"], event["occurred_at"])
            evidence = {"signal": "rapid_ad_taps", "taps": str(len(taps)), "seconds": f"{span:.1f}"}
            moments.append(Moment("ad_fatigue", event["occurred_at"], tuple(e["event_id"] for e in taps), evidence))
            taps = []
    failed = [
        e
        for e in events
        if e["event_type"] == "purchase" and (_prop(e, "payment_status") or "").lower() in FAILED_PAYMENT
    ]
    if len(failed) >= t.ad_min_failed_purchases:
        moments.append(Moment("ad_fatigue", failed[-1]["occurred_at"], tuple(e["event_id"] for e in failed),
                              {"signal": "failed_purchases", "failures": str(len(failed))}))  # fmt: skip
    return moments


def detect(events: Iterable[dict], t: Thresholds, watermark: datetime | None = None) -> list[Moment]:
    """Every micro-moment in one session's events (any order; sorted here by event time, then id)."""
    ordered = sorted(events, key=lambda e: (e["occurred_at"], e["event_id"]))
    return [
        *rapid_scroll_bursts(ordered, t),
        *search_refinements(ordered, t),
        *repeat_product_views(ordered, t),
        *location_shifts(ordered, t),
        *cart_abandonment_risk(ordered, t, watermark),
        *ad_fatigue(ordered, t),
    ]
