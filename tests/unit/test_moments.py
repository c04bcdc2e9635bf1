"""Each micro-moment on a small session: a positive case and a near miss (pure Python)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from spark_jobs.config import InvalidConfigError
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver.moments import detect, load_thresholds

pytestmark = pytest.mark.unit

T = load_thresholds(REPO_ROOT / "config" / "micro_moments.yaml")
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def ev(n: int, event_type: str, seconds: float, **props) -> dict:
    lat, lon = props.pop("lat", None), props.pop("lon", None)
    return {"event_id": f"e-{n}", "event_type": event_type, "occurred_at": T0 + timedelta(seconds=seconds),
            "properties": {k: str(v) for k, v in props.items()}, "lat": lat, "lon": lon}  # fmt: skip


def kinds(events, watermark=None) -> list[str]:
    return [m.moment_type for m in detect(events, T, watermark)]


def test_three_fast_deepening_scrolls_are_a_burst_but_one_flick_or_slow_scrolls_are_not():
    burst = [ev(1, "scroll", 0, scroll_depth=10), ev(2, "scroll", 1.2, scroll_depth=30),
             ev(3, "page_view", 1.5), ev(4, "scroll", 2.5, scroll_depth=55)]  # fmt: skip
    (moment,) = detect(burst, T)
    assert moment.moment_type == "rapid_scroll_burst" and moment.event_ids == ("e-1", "e-2", "e-4")
    assert moment.evidence == {"scrolls": "3", "from_depth": "10", "to_depth": "55", "seconds": "2.5"}
    assert kinds([ev(1, "scroll", 0, scroll_depth=10), ev(2, "scroll", 1, scroll_depth=80)]) == []  # two only
    slow = [
        ev(1, "scroll", 0, scroll_depth=10),
        ev(2, "scroll", 1, scroll_depth=30),
        ev(3, "scroll", 3.5, scroll_depth=50),
    ]
    assert kinds(slow) == []  # 2.5 s gap breaks it
    jitter = [
        ev(1, "scroll", 0, scroll_depth=40),
        ev(2, "scroll", 0.5, scroll_depth=42),
        ev(3, "scroll", 1, scroll_depth=44),
    ]
    assert kinds(jitter) == []  # smoothing: +2 points is not a scroll onward


def test_search_refinement_narrowed_or_reworded_but_not_a_new_topic_or_a_late_return():
    narrowed = [ev(1, "search", 0, query="running shoes"), ev(2, "search", 40, query="running shoes waterproof")]
    (moment,) = detect(narrowed, T)
    assert (moment.moment_type, moment.evidence["kind"]) == ("search_refinement", "narrowed")
    assert kinds([ev(1, "search", 0, query="shoes red"), ev(2, "search", 30, query="shoes blue")]) == [
        "search_refinement"
    ]
    assert kinds([ev(1, "search", 0, query="running shoes"), ev(2, "search", 30, query="winter jacket")]) == []
    assert kinds([ev(1, "search", 0, query="shoes"), ev(2, "search", 301, query="shoes red")]) == []  # too late


def test_the_same_product_three_times_in_five_minutes_but_not_in_six():
    views = [ev(1, "product_view", 0, product_id="p-1"), ev(2, "product_view", 100, product_id="p-2"),
             ev(3, "product_view", 150, product_id="p-1"), ev(4, "product_view", 299, product_id="p-1")]  # fmt: skip
    (moment,) = detect(views, T)
    assert moment.evidence == {"product_id": "p-1", "views": "3", "seconds": "299.0"}
    spread = [ev(1, "product_view", 0, product_id="p-1"), ev(2, "product_view", 150, product_id="p-1"),
              ev(3, "product_view", 301, product_id="p-1")]  # fmt: skip
    assert kinds(spread) == []


def test_location_shift_over_the_threshold_only():
    berlin, spandau, hamburg = (52.52, 13.405), (52.535, 13.2), (53.55, 9.993)
    moved = [
        ev(1, "page_view", 0, lat=berlin[0], lon=berlin[1]),
        ev(2, "page_view", 600, lat=hamburg[0], lon=hamburg[1]),
    ]
    (moment,) = detect(moved, T)
    assert moment.moment_type == "location_shift" and 250 < float(moment.evidence["km"]) < 260
    near = [
        ev(1, "page_view", 0, lat=berlin[0], lon=berlin[1]),
        ev(2, "page_view", 600, lat=spandau[0], lon=spandau[1]),
    ]
    assert kinds(near) == []  # about 14 km: across town, not a shift
    assert kinds([ev(1, "page_view", 0), ev(2, "page_view", 5, lat=1.0, lon=1.0)]) == []  # one known position


def test_cart_abandonment_needs_no_purchase_and_a_quiet_session_by_the_watermark():
    cart = [ev(1, "product_view", 0, product_id="p-1"), ev(2, "cart_add", 30, product_id="p-1")]
    quiet = T0 + timedelta(seconds=30 + 600)
    (moment,) = detect(cart, T, watermark=quiet)
    assert moment.moment_type == "cart_abandonment_risk" and moment.evidence["products"] == "p-1"
    assert kinds(cart, watermark=quiet - timedelta(seconds=1)) == []  # not quiet long enough yet
    assert kinds([*cart, ev(3, "purchase", 60)], watermark=quiet + timedelta(hours=1)) == []
    assert kinds(cart) == []  # no watermark yet: nothing is known to be quiet


def test_ad_fatigue_from_rapid_ad_taps_or_repeated_failed_purchases():
    taps = [ev(i, "click", i * 5, button_id="ad_banner_top") for i in range(4)]
    assert kinds(taps) == ["ad_fatigue"]
    assert kinds([ev(i, "click", i * 11, button_id="ad_banner_top") for i in range(4)]) == []  # 33 s: too slow
    assert kinds([ev(i, "click", i * 5, button_id="add_to_cart") for i in range(4)]) == []  # not an ad
    failed = [ev(i, "purchase", i * 60, payment_status="declined") for i in range(5)]
    (moment,) = detect(failed, T)
    assert moment.evidence == {"signal": "failed_purchases", "failures": "5"}
    assert kinds(failed[:4]) == []


def test_thresholds_are_checked_and_named(tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text(
        (REPO_ROOT / "config" / "micro_moments.yaml").read_text().replace("min_scrolls: 3", "min_scrolls: 0")
    )
    with pytest.raises(InvalidConfigError, match=r"rapid_scroll_burst\.min_scrolls: needs a positive number, got 0"):
        load_thresholds(bad)
    bad.write_text("rapid_scrol_burst: {}\n")
    with pytest.raises(InvalidConfigError, match="rapid_scrol_burst: unknown micro-moment"):
        load_thresholds(bad)
    assert replace(T, scroll_min_scrolls=2).scroll_min_scrolls == 2


def test_a_scroll_depth_is_a_percentage_or_no_depth():
    from spark_jobs.silver.moments import scroll_depth

    values = ["0", "75.5", "100", "-5", "101", "abc", "NaN", "1e309", "", None]
    depths = [scroll_depth({"properties": {"scroll_depth": v}}) for v in values]
    assert depths == [0.0, 75.5, 100.0, None, None, None, None, None, None, None]
