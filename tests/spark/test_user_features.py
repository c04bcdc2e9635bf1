"""Point-in-time user features on tiny inline session frames (real Spark and Delta).

Windows are half-open on session_start, [as_of - N days, as_of), and a session counts only once it ended
before as_of = as_of_date 00:00 UTC: starting exactly N days before as_of is in, ending exactly at as_of is out.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable

from spark_jobs.contracts import table_contract
from spark_jobs.silver.user_features import (
    TABLE,
    FeatureConfig,
    build_user_features,
    update_user_features,
)
from tests.helpers import table

pytestmark = pytest.mark.spark

CFG = FeatureConfig("test-v1", short_days=7, long_days=28)
# The silver.sessions layout the features read (built here, not from the sessions contract, which is in flux).
SESSIONS_SCHEMA = (
    "person_id STRING, anonymous_id STRING, session_id STRING, session_start TIMESTAMP, session_end TIMESTAMP, "
    "is_closed BOOLEAN, event_count INT, product_views INT, cart_adds INT, converted BOOLEAN, "
    "dwell_total_seconds DOUBLE, duration_seconds DOUBLE, local_hour INT, local_weekday INT, session_date DATE"
)
FROM_START = "from session_start"  # local hour / weekday default: the UTC start's, as for a user in UTC


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _session(sid, start, end, person="p1", *, views=0, carts=0, converted=False, dwell=0.0,
             hour=FROM_START, weekday=FROM_START, closed=True):  # fmt: skip
    begin, finish = _at(start), _at(end)
    return {
        "person_id": person, "anonymous_id": f"a-{person}", "session_id": sid, "session_start": begin,
        "session_end": finish, "is_closed": closed, "event_count": 1 + views + carts, "product_views": views,
        "cart_adds": carts, "converted": converted, "dwell_total_seconds": dwell,
        "duration_seconds": (finish - begin).total_seconds(),
        "local_hour": begin.hour if hour == FROM_START else hour,
        "local_weekday": begin.isoweekday() if weekday == FROM_START else weekday,
        "session_date": begin.date(),
    }  # fmt: skip


def _sessions(spark, rows):
    return spark.createDataFrame(rows, SESSIONS_SCHEMA)


def _expected(spark, rows):
    """rows: dicts of the contract's columns; hours / weekdays given as {bucket: count}."""
    data = []
    for row in rows:
        hours, weekdays = row.pop("hours", {}), row.pop("weekdays", {})
        data.append({
            **row,
            "engagement_by_hour": [hours.get(h, 0) for h in range(24)],
            "engagement_by_weekday": [weekdays.get(d, 0) for d in range(1, 8)],  # 1 = Monday at index 0
        })  # fmt: skip
    return spark.createDataFrame(data, table_contract(TABLE).schema())


# One person over 40 days. as_of 2026-10-01: 7-day window from 09-24 00:00, 28-day window from 09-03 00:00.
P1 = [
    _session("F", "2026-08-25 10:00", "2026-08-25 10:30", views=2, carts=1, converted=True, dwell=100.0),
    # ended inside the 28-day window of 10-01 but started before it: gives the row, counts for nothing
    _session("E", "2026-09-02 23:30", "2026-09-03 00:05", views=4, dwell=50.0),
    # starts exactly 28 days before 10-01: in the 28-day window
    _session("D", "2026-09-03 00:00", "2026-09-03 00:20", views=3, carts=1, dwell=60.0, hour=2, weekday=4),
    # starts 10 minutes before the 7-day window of 10-01: in 28 days, not in 7
    _session("B", "2026-09-23 23:50", "2026-09-24 00:10", dwell=30.0, hour=None, weekday=3),
    # starts exactly 7 days before 10-01: in the 7-day window
    _session(
        "A", "2026-09-24 00:00", "2026-09-24 12:00", views=5, carts=2, converted=True, dwell=90.0, hour=14, weekday=4
    ),
    # ends exactly at 10-01 00:00: not before that as_of, so it counts from 10-02 on
    _session(
        "C", "2026-09-30 23:40", "2026-10-01 00:00", views=1, carts=1, converted=True, dwell=30.0, hour=1, weekday=3
    ),
    _session("G", "2026-10-03 12:00", "2026-10-03 12:10", views=9, dwell=10.0),
]


def test_hand_checked_features_at_the_window_boundaries(spark):
    features = build_user_features(_sessions(spark, P1), [date(2026, 10, 1), date(2026, 10, 2), date(2026, 11, 15)],
                                   CFG)  # fmt: skip
    first_seen = _at("2026-08-25 10:00")
    expected = _expected(spark, [
        # 10-01: E, D, B, A ended in [09-03, 10-01); D, B, A started in the 28-day window; only A in 7 days
        {"person_id": "p1", "sessions_7d": 1, "sessions_28d": 3, "product_views_28d": 8, "cart_adds_28d": 3,
         "purchases_28d": 1, "cart_add_rate_28d": 3 / 8, "conversion_rate_28d": 1 / 3,
         "avg_dwell_seconds_28d": 60.0, "days_since_last_session": 6.5,  # A ended 09-24 12:00
         "hours": {2: 1, 14: 1}, "weekdays": {3: 1, 4: 2},  # B has no local hour
         "first_seen": first_seen, "feature_version": "test-v1", "as_of_date": date(2026, 10, 1)},
        # 10-02: windows from 09-25 and 09-04; B, A, C count (C ended exactly at 10-01 00:00), D and E dropped out
        {"person_id": "p1", "sessions_7d": 1, "sessions_28d": 3, "product_views_28d": 6, "cart_adds_28d": 3,
         "purchases_28d": 2, "cart_add_rate_28d": 0.5, "conversion_rate_28d": 2 / 3,
         "avg_dwell_seconds_28d": 50.0, "days_since_last_session": 1.0,
         "hours": {1: 1, 14: 1}, "weekdays": {3: 2, 4: 1},
         "first_seen": first_seen, "feature_version": "test-v1", "as_of_date": date(2026, 10, 2)},
        # 11-15: nothing ended in the 28 days before (G ended 10-03), so no row
    ])  # fmt: skip
    assert_df_equality(features, expected, ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)


def test_sessions_ending_after_as_of_never_contribute(spark):
    dates = [date(2026, 10, 1), date(2026, 10, 2)]
    midnight = [_session("M", "2026-09-30 22:00", "2026-10-01 01:00", person="p2", views=3)]  # spans 10-01 00:00
    base = _sessions(spark, P1 + midnight)
    rows = {(r.person_id, r.as_of_date): r for r in build_user_features(base, dates, CFG).collect()}
    assert ("p2", date(2026, 10, 1)) not in rows  # started before as_of, but still running
    p2 = rows[("p2", date(2026, 10, 2))]
    assert (p2.sessions_28d, p2.product_views_28d, p2.days_since_last_session) == (1, 3, 23 / 24)

    future = [
        _session("LONG", "2026-08-01 09:00", "2026-10-05 09:00", views=50),  # earliest start, ends later
        _session("LATE", "2026-10-01 23:00", "2026-10-02 00:00", person="p2", views=7),  # ends exactly at 10-02
        _session("NEXT", "2026-10-02 08:00", "2026-10-02 09:00", views=4, converted=True),
        _session("NEW", "2026-10-03 08:00", "2026-10-03 09:00", person="p3"),
    ]
    with_future = _sessions(spark, P1 + midnight + future)
    assert_df_equality(build_user_features(with_future, dates, CFG), build_user_features(base, dates, CFG),
                       ignore_row_order=True)  # fmt: skip
    # ... including first_seen: LONG started first but had not ended
    assert {r.first_seen for r in build_user_features(with_future, dates, CFG).collect() if r.person_id == "p1"} == {
        datetime(2026, 8, 25, 10, 0)
    }


def test_engagement_histograms_count_28_day_sessions_by_local_hour_and_weekday(spark):
    sessions = _sessions(spark, [
        _session("h1", "2026-09-10 10:00", "2026-09-10 10:30", hour=0, weekday=1),
        _session("h2", "2026-09-11 10:00", "2026-09-11 10:30", hour=0, weekday=7),
        _session("h3", "2026-09-12 10:00", "2026-09-12 10:30", hour=23, weekday=7),
        _session("h4", "2026-09-13 10:00", "2026-09-13 10:30", hour=None, weekday=None),  # zone unknown
        _session("h5", "2026-09-14 10:00", "2026-09-14 10:30", hour=5, weekday=3),
        # ended in the window but started before it: not a 28-day session, not counted
        _session("h6", "2026-09-02 23:00", "2026-09-03 01:00", hour=12, weekday=2),
    ])  # fmt: skip
    row = build_user_features(sessions, [date(2026, 10, 1)], CFG).first()
    assert (len(row.engagement_by_hour), len(row.engagement_by_weekday)) == (24, 7)
    assert row.engagement_by_hour == [2, 0, 0, 0, 0, 1] + [0] * 17 + [1]
    assert row.engagement_by_weekday == [1, 0, 1, 0, 0, 0, 2]  # Monday first, Sunday last
    assert row.sessions_28d == 5  # the session without a local time still counts as a session


def test_ratios_are_null_when_their_denominator_is_zero(spark):
    sessions = _sessions(spark, [
        _session("v0", "2026-09-20 10:00", "2026-09-20 10:30", dwell=20.0),
        _session("v1", "2026-09-21 10:00", "2026-09-21 10:30", dwell=40.0),
        # p2's only session ended in the 28-day window but started before it: a row with no 28-day sessions
        _session("x", "2026-09-02 23:00", "2026-09-03 01:00", person="p2", views=2, carts=1, converted=True),
    ])  # fmt: skip
    rows = {r.person_id: r for r in build_user_features(sessions, [date(2026, 10, 1)], CFG).collect()}
    p1, p2 = rows["p1"], rows["p2"]
    assert (p1.cart_add_rate_28d, p1.conversion_rate_28d, p1.avg_dwell_seconds_28d) == (None, 0.0, 30.0)
    assert (p2.sessions_28d, p2.product_views_28d, p2.purchases_28d) == (0, 0, 0)
    assert (p2.cart_add_rate_28d, p2.conversion_rate_28d, p2.avg_dwell_seconds_28d) == (None, None, None)
    assert p2.days_since_last_session == 671 / 24 and p2.engagement_by_hour == [0] * 24


def _write_sessions(spark, settings, rows, mode="append"):
    _sessions(spark, rows).write.format("delta").mode(mode).partitionBy("session_date").save(
        str(settings.table_path("silver.sessions"))
    )


def _version(spark, settings):
    return DeltaTable.forPath(spark, str(settings.table_path(TABLE))).history(1).first().version


def _sorted_rows(spark, settings):
    return sorted(table(spark, settings, TABLE).collect(), key=lambda r: (r.as_of_date, r.person_id))


def test_update_is_idempotent_and_extending_through_adds_only_the_new_dates(spark, settings):
    _write_sessions(spark, settings, P1)
    first = update_user_features(spark, settings, through=date(2026, 10, 2), cfg=CFG)
    # from the day after the first session's date (08-25) through 10-02
    assert (first.dates[0], first.dates[-1], len(first.dates)) == (date(2026, 8, 26), date(2026, 10, 2), 38)
    stored = table(spark, settings, TABLE)
    assert_df_equality(stored, build_user_features(_sessions(spark, P1), list(first.dates), CFG),
                       ignore_row_order=True, ignore_nullable=True, ignore_metadata=True)  # fmt: skip
    assert {r.as_of_date for r in stored.collect()} == set(first.dates)  # p1 always had a session in 28 days
    snapshot, version = _sorted_rows(spark, settings), _version(spark, settings)

    again = update_user_features(spark, settings, through=date(2026, 10, 2), cfg=CFG)
    assert again.dates == ()  # nothing new: no write at all
    assert (_sorted_rows(spark, settings), _version(spark, settings)) == (snapshot, version)

    # recomputing written dates from identical sessions: no MERGE, so no new version (a MERGE that changes no
    # row would still commit one)
    recompute = update_user_features(spark, settings, through=date(2026, 10, 2), start=date(2026, 9, 20), cfg=CFG)
    assert len(recompute.dates) == 13 and recompute.counts.as_details() == {"inserted": 0, "updated": 0, "deleted": 0}
    assert (_sorted_rows(spark, settings), _version(spark, settings)) == (snapshot, version)

    extended = update_user_features(spark, settings, through=date(2026, 10, 5), cfg=CFG)
    assert extended.dates == (date(2026, 10, 3), date(2026, 10, 4), date(2026, 10, 5))
    after = _sorted_rows(spark, settings)
    assert [r for r in after if r.as_of_date <= date(2026, 10, 2)] == snapshot
    assert [r.as_of_date for r in after if r.as_of_date > date(2026, 10, 2)] == list(extended.dates)
    assert extended.counts.as_details() == {"inserted": 3, "updated": 0, "deleted": 0}


def test_update_waits_for_open_sessions_before_computing_later_dates(spark, settings):
    open_b = [s if s["session_id"] != "B" else {**s, "is_closed": False} for s in P1]
    _write_sessions(spark, settings, open_b)
    run = update_user_features(spark, settings, through=date(2026, 10, 2), cfg=CFG)
    assert run.dates[-1] == date(2026, 9, 24) and "still open" in run.held_back  # B ended 09-24 00:10
    _write_sessions(spark, settings, P1, mode="overwrite")  # silver closed B
    resumed = update_user_features(spark, settings, through=date(2026, 10, 2), cfg=CFG)
    assert (resumed.dates[0], resumed.dates[-1], resumed.held_back) == (date(2026, 9, 25), date(2026, 10, 2), None)


def test_recomputing_from_a_start_date_picks_up_late_sessions_from_their_end_on(spark, settings):
    recent = [s for s in P1 if s["session_id"] in ("B", "A", "C")]  # first session date 09-23
    _write_sessions(spark, settings, recent)
    assert update_user_features(spark, settings, through=date(2026, 10, 2), cfg=CFG).dates[0] == date(2026, 9, 24)
    before = _sorted_rows(spark, settings)
    late = [_session("L", "2026-09-29 10:00", "2026-09-29 10:30", views=4),
            _session("N", "2026-09-29 11:00", "2026-09-29 11:30", person="p9")]  # fmt: skip
    _write_sessions(spark, settings, late)
    assert update_user_features(spark, settings, through=date(2026, 10, 2), cfg=CFG).dates == ()  # already written
    rerun = update_user_features(spark, settings, through=date(2026, 10, 2), start=date(2026, 9, 28), cfg=CFG)
    # both late sessions ended on 09-29: the rows of 09-30 .. 10-02 change, earlier ones do not
    assert rerun.counts.as_details() == {"inserted": 3, "updated": 3, "deleted": 0}
    after = _sorted_rows(spark, settings)
    assert [r for r in after if r.as_of_date < date(2026, 9, 30)] == [
        r for r in before if r.as_of_date < date(2026, 9, 30)
    ]
    assert [(r.person_id, r.product_views_28d) for r in after if r.as_of_date == date(2026, 10, 2)] == [
        ("p1", 10),  # B 0 + A 5 + C 1 + L 4
        ("p9", 0),
    ]
