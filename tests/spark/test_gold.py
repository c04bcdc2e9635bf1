"""Scoring, segment assignment and rule checking on tiny inline frames (real Spark)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from spark_jobs.config import (
    InvalidConfigError,
    ScoringModel,
    SegmentRule,
    Signal,
    check_rules_compile,
    load_scoring,
    load_segments,
)
from spark_jobs.contracts import table_contract
from spark_jobs.gold.scoring import assign_segments, current_segments, score_sessions
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.spark

T0 = datetime(2026, 11, 2, 10, 0)
MODEL = ScoringModel("test-v1", (
    Signal("dwell", "dwell_seconds", "saturate", 0.5, cap=60.0),
    Signal("cart", "cart_adds", "indicator", 0.3),
    Signal("mobile", "device_type", "equals", 0.2, equals="mobile"),
))  # fmt: skip
RULES = (
    SegmentRule("High Intent", "intent_score >= 70 AND page_depth >= 3"),
    SegmentRule("Bounce Risk", "event_count <= 2"),
    SegmentRule("Standard", "true"),
)


def _sessions(spark, rows):
    """rows: (session_id, person_id, minutes after T0, dwell, cart_adds, device, page_depth, event_count)."""
    data = [{
        "session_id": sid, "person_id": pid, "anonymous_id": "a", "user_id": None,
        "session_start": T0 + timedelta(minutes=m), "session_end": T0 + timedelta(minutes=m + 3),
        "is_closed": True, "sessionized_by": "idle_timeout", "event_count": n, "page_depth": depth,
        "dwell_seconds": dwell, "max_scroll_depth": 0.0, "product_views": 0, "cart_adds": carts,
        "wishlist_adds": 0, "searches": 0, "duration_seconds": 180.0, "device_type": device,
        "timezone": "UTC", "converted": False, "session_date": date(2026, 11, 2),
        "page_views": depth, "dwell_total_seconds": dwell * depth, "engaged_seconds": 60.0, "scroll_velocity": 0.0,
        "scrolls": 0, "clicks": 0, "click_density": 0.0, "distinct_products": 0, "repeat_product_views": 0,
        "search_refinements": 0, "checkout_started": False, "traffic_source": "direct", "traffic_medium": "direct",
        "session_phase": "browsing", "updated_at": T0,
    } for sid, pid, m, dwell, carts, device, depth, n in rows]  # fmt: skip
    return spark.createDataFrame(data, table_contract("silver.sessions").schema())


def test_score_is_the_sum_of_signal_contributions(spark):
    sessions = _sessions(spark, [
        ("s1", "p1", 0, 30.0, 1, "mobile", 4, 9),  # 25 + 30 + 20
        ("s2", "p2", 0, 120.0, 0, "desktop", 1, 5),  # 50 (dwell saturates at the cap)
        ("s3", "p3", 0, 0.0, 0, None, 1, 1),  # nothing
    ])  # fmt: skip
    scored = {r.session_id: r for r in score_sessions(sessions, MODEL).collect()}
    assert {k: (r.intent_score, r.contributions) for k, r in scored.items()} == {
        "s1": (75.0, {"dwell": 25.0, "cart": 30.0, "mobile": 20.0}),
        "s2": (50.0, {"dwell": 50.0, "cart": 0.0, "mobile": 0.0}),
        "s3": (0.0, {"dwell": 0.0, "cart": 0.0, "mobile": 0.0}),
    }
    assert {r.model_version for r in scored.values()} == {"test-v1"}


def test_contributions_add_up_to_the_score_with_the_shipped_weights(spark):
    model = load_scoring(REPO_ROOT / "config" / "scoring.yaml")
    sessions = _sessions(spark, [("s1", "p1", 0, 17.3, 2, "mobile", 2, 7), ("s2", "p2", 0, 61.0, 0, "tablet", 5, 3)])
    for row in score_sessions(sessions, model).collect():
        assert abs(sum(row.contributions.values()) - row.intent_score) < 1e-6
        assert 0 <= row.intent_score <= 100


def test_the_first_matching_rule_wins(spark):
    sessions = _sessions(spark, [
        ("hot", "p1", 0, 60.0, 1, "mobile", 3, 2),  # High Intent although it also matches Bounce Risk
        ("short", "p2", 0, 0.0, 0, "desktop", 1, 2),
        ("mid", "p3", 0, 30.0, 0, "desktop", 2, 6),
    ])  # fmt: skip
    segments = {r.session_id: r.segment for r in assign_segments(score_sessions(sessions, MODEL), RULES).collect()}
    assert segments == {"hot": "High Intent", "short": "Bounce Risk", "mid": "Standard"}


def test_a_persons_most_recent_session_decides_the_segment(spark):
    sessions = _sessions(spark, [("old", "p1", 0, 60.0, 1, "mobile", 3, 9), ("new", "p1", 60, 0.0, 0, "desktop", 1, 1)])
    scored = assign_segments(score_sessions(sessions, MODEL), RULES)
    (row,) = current_segments(scored).collect()
    assert (row.person_id, row.session_id, row.segment, row.sessions) == ("p1", "new", "Bounce Risk", 2)


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("page_depth + 1", "not a boolean"),
        ("page_depth >= 'x' AND", "Spark cannot use"),
        ("nosuchfn(page_depth)", "Spark cannot use"),
    ],
)
def test_spark_rejects_rules_that_do_not_compile_to_a_boolean(spark, when, problem):
    with pytest.raises(InvalidConfigError) as caught:
        check_rules_compile(spark, REPO_ROOT / "config" / "segments.yaml", (SegmentRule("Broken", when),))
    assert caught.value.where == "rule 'Broken'" and problem in caught.value.problem


def test_shipped_rules_compile(spark):
    from spark_jobs.config import rule_columns, rule_input_schema

    path = REPO_ROOT / "config" / "segments.yaml"
    check_rules_compile(spark, path, load_segments(path))
    assert set(rule_input_schema().names) == rule_columns()  # what load checks = what Spark checks


def test_rules_see_the_sessions_moments_and_the_persons_features_as_of_that_day(spark, settings):
    from spark_jobs.contracts import ensure_tables
    from spark_jobs.gold.scoring import segment_inputs

    ensure_tables(spark, settings, ("silver.micro_moments", "silver.user_features"))
    moment = {"moment_id": "m1", "moment_type": "ad_fatigue", "session_id": "tired", "person_id": "p1",
              "anonymous_id": "a", "detected_at": T0, "event_ids": ["e1"], "evidence": {"ad_taps": "5"},
              "moment_date": T0.date()}  # fmt: skip
    spark.createDataFrame([moment], table_contract("silver.micro_moments").schema()).write.format("delta").mode(
        "append"
    ).save(str(settings.table_path("silver.micro_moments")))

    def features(person, as_of):  # a regular visitor who never buys
        return {"person_id": person, "sessions_7d": 3, "sessions_28d": 6, "product_views_28d": 9, "cart_adds_28d": 0,
                "purchases_28d": 0, "cart_add_rate_28d": 0.0, "conversion_rate_28d": 0.0,
                "avg_dwell_seconds_28d": 4.0, "days_since_last_session": 1.0, "engagement_by_hour": [0] * 24,
                "engagement_by_weekday": [0] * 7, "first_seen": T0 - timedelta(days=20), "feature_version": "v1",
                "as_of_date": as_of}  # fmt: skip

    rows = [features("p2", T0.date()), features("p3", T0.date() + timedelta(days=1))]  # p3's is from the future
    spark.createDataFrame(rows, table_contract("silver.user_features").schema()).write.format("delta").mode(
        "append"
    ).save(str(settings.table_path("silver.user_features")))
    sessions = _sessions(spark, [
        ("tired", "p1", 0, 30.0, 0, "desktop", 2, 6),
        ("regular", "p2", 0, 0.0, 0, "desktop", 2, 6),
        ("future", "p3", 0, 0.0, 0, "desktop", 2, 6),
    ])  # fmt: skip
    rules = load_segments(REPO_ROOT / "config" / "segments.yaml")
    inputs = segment_inputs(spark, settings, score_sessions(sessions, MODEL))
    rows = {r.session_id: r for r in assign_segments(inputs, rules).collect()}
    assert (rows["tired"].moments_ad_fatigue, rows["regular"].moments_ad_fatigue) == (1, 0)
    assert {k: r.segment for k, r in rows.items()} == {
        "tired": "Disinterested",  # its ad-fatigue moment
        "regular": "Disinterested",  # its user features as of that day
        "future": "Standard",  # features computed after the session never reach it
    }
