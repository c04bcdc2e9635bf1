"""The silver stream across micro-batches: open sessions visible and growing, out-of-order and late
events, the watermark, late-events table, marathon splits, and a DST change in the user's zone."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables
from spark_jobs.gold import job as gold
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver import job as silver
from spark_jobs.silver.identity import IdentityChanges
from spark_jobs.silver.sessions import client_session_id
from tests.helpers import table
from tests.spark.test_sessions import T0, _events, _view, sessions_of

pytestmark = pytest.mark.spark


class Stream:
    """Feeds batches of events through bronze.events into process_silver_batch, as the stream would."""

    def __init__(self, spark, settings):
        self.spark, self.settings, self.batch = spark, settings, 0
        ensure_tables(spark, settings)

    def feed(self, rows, t0=T0, timezone="Europe/Berlin", device_type="mobile"):
        events = _events(self.spark, rows, prefix=f"b{self.batch}-", t0=t0, timezone=timezone, device_type=device_type)
        events.write.format("delta").mode("append").save(str(self.settings.table_path("bronze.events")))
        record = silver.process_silver_batch(self.spark, self.settings, events, self.batch, "q")
        self.batch += 1
        return record

    def sessions(self):
        return sorted(
            (r.anonymous_id, r.session_start, r.event_count, r.is_closed)
            for r in table(self.spark, self.settings, "silver.sessions").collect()
        )


def at(seconds: float) -> datetime:
    return (T0 + timedelta(seconds=seconds)).replace(tzinfo=None)


@pytest.fixture
def stream(spark, settings):
    return Stream(spark, replace(settings, allowed_lateness="10 minutes"))


def test_an_open_session_is_visible_grows_every_batch_and_closes_with_the_watermark(stream):
    stream.feed([_view("a1", 0)])
    assert stream.sessions() == [("a1", at(0), 1, False)]
    stream.feed([_view("a1", 120), _view("a1", 240)])
    assert stream.sessions() == [("a1", at(0), 3, False)]
    # another device's events move the watermark to 1500 - 600 = 900 >= 240 + 300: a1's session closes
    stream.feed([_view("a2", 1500)])
    assert stream.sessions() == [("a1", at(0), 3, True), ("a2", at(1500), 1, False)]


def test_out_of_order_events_across_batches_land_in_the_right_sessions(stream):
    stream.feed([_view("a1", 700), _view("a1", 600)])
    stream.feed([_view("a1", 200), _view("a1", 150)])  # earlier, but within the lateness (watermark 100)
    assert stream.sessions() == [("a1", at(150), 2, False), ("a1", at(600), 2, False)]


def test_a_late_event_within_the_lateness_bridges_two_sessions(stream):
    stream.feed([_view("a1", 0), _view("a1", 400)])
    assert len(stream.sessions()) == 2
    record = stream.feed([_view("a1", 200)])
    assert stream.sessions() == [("a1", at(0), 3, False)]
    assert record.details["deleted"] == 1 and record.late_rows == 0


def test_an_event_behind_the_watermark_is_recorded_as_late_and_leaves_the_closed_session_alone(stream):
    stream.feed([_view("a1", 0), _view("a1", 60)])
    stream.feed([_view("a2", 3600)])  # watermark 3000: a1's session closed
    record = stream.feed([_view("a1", 90), _view("a2", 3660)])
    assert record.late_rows == 1
    assert stream.sessions() == [("a1", at(0), 2, True), ("a2", at(3600), 2, False)]
    late = table(stream.spark, stream.settings, "silver.late_events").collect()
    assert [(r.anonymous_id, r.occurred_at, r.lateness_seconds) for r in late] == [("a1", at(90), 2910.0)]
    # nothing lost: input = recomputed into sessions + late
    runs = table(stream.spark, stream.settings, "ops.pipeline_runs").filter("job = 'silver'")
    assert runs.selectExpr("sum(input_rows)").first()[0] == 5
    assert runs.selectExpr("sum(late_rows)").first()[0] == 1
    # the next batch's watermark: what this process remembered is what ops.pipeline_runs says after a restart
    assert (str(stream.settings.lakehouse), "q", 2) in silver._newest_seen
    remembered = silver._previous_max_event_time(stream.spark, stream.settings, "q", 3)
    silver._newest_seen.clear()  # as a restarted process finds it
    assert silver._previous_max_event_time(stream.spark, stream.settings, "q", 3) == remembered == at(3660)


def test_a_later_batch_recomputes_only_the_open_sessions(stream):
    stream.feed([_view("a1", 0), _view("a1", 60)])
    stream.feed([_view("a1", 2000)])  # watermark 1400: the first session is closed, a new one is open
    record = stream.feed([_view("a1", 2100)])
    assert record.details["recomputed_events"] == "2"  # the open session's events, not the device's history
    assert stream.sessions() == [("a1", at(0), 2, True), ("a1", at(2000), 2, False)]


def test_a_client_session_id_spans_an_idle_gap_across_batches(stream):
    stream.feed([_view("a1", 0, sid="c-1")])
    stream.feed([_view("a1", 3600, sid="c-1"), _view("a1", 3700)])
    rows = {r.client_session_id: r for r in table(stream.spark, stream.settings, "silver.sessions").collect()}
    assert rows["c-1"].event_count == 2 and rows["c-1"].sessionized_by == "client_session_id"
    assert len(rows) == 2


def test_a_marathon_is_split_at_the_maximum_session_length(spark):
    every_minute = [_view("a1", 60 * i) for i in range(150)]  # 149 minutes of steady activity
    split = sorted(
        (r.session_start, r.event_count, r.sessionized_by)
        for r in sessions_of(_events(spark, every_minute), 300, max_length_seconds=3600).collect()
    )
    assert split == [(at(0), 60, "idle_timeout"), (at(3600), 60, "max_length"), (at(7200), 30, "max_length")]


def test_a_marathon_fed_in_batches_splits_as_a_full_recompute_does(stream):
    stream.settings = replace(stream.settings, max_session_length="1 hour")
    for hour in range(3):
        stream.feed([_view("a1", 3600 * hour + 60 * i) for i in range(0, 60, 2)])
    assert [(s, n) for _, s, n, _ in stream.sessions()] == [(at(0), 30), (at(3600), 30), (at(7200), 30)]


def test_sessions_across_a_dst_change_use_event_time_and_local_time_follows_the_zone(spark):
    # Berlin springs forward on 2026-03-29: 01:59 CET is followed by 03:00 CEST.
    spring = datetime(2026, 3, 29, 0, 50, tzinfo=UTC)  # 01:50 local
    berlin = sessions_of(_events(spark, [_view("a1", 0), _view("a1", 240), _view("a1", 480)], t0=spring)).collect()
    assert len(berlin) == 1 and berlin[0].duration_seconds == 480  # 01:50 -> 03:58 local is 8 minutes
    assert (berlin[0].local_start, berlin[0].local_hour) == (datetime(2026, 3, 29, 1, 50), 1)
    # New York falls back on 2026-11-01: 01:58 EDT, then 01:02 EST four minutes later (one session)
    fall = datetime(2026, 11, 1, 5, 58, tzinfo=UTC)
    york = _events(spark, [_view("a2", 0), _view("a2", 240)], t0=fall, timezone="America/New_York")
    [session] = sessions_of(york).collect()
    assert session.event_count == 2 and session.local_start == datetime(2026, 11, 1, 1, 58)
    assert (session.local_weekday, session.daypart) == (7, "night")  # a Sunday night


def test_a_login_on_a_second_device_gives_both_devices_sessions_one_person(spark, settings):
    # identity resolved over each batch's neighbourhood, as on a graph too large to collect
    stream = Stream(spark, replace(settings, allowed_lateness="10 minutes", identity_collect_max_edges=0))
    repeat = [("a1", 60 * i, "product_view", {"product_id": "p-9"}, None, None, "/p/9") for i in range(3)]
    stream.feed([*repeat, _view("a2", 30, uid="u-1")])  # a1's session has a repeat-product-view moment
    stream.feed([_view("a3", 3000)])  # watermark 2400: both sessions closed
    people = {r.anonymous_id: r.person_id for r in table(stream.spark, stream.settings, "silver.sessions").collect()}
    assert people["a1"] != people["a2"]
    record = stream.feed([_view("a1", 3100, uid="u-1")])  # the first device logs in too
    rows = table(stream.spark, stream.settings, "silver.sessions").filter("anonymous_id IN ('a1', 'a2')").collect()
    assert len(rows) == 3 and len({r.person_id for r in rows}) == 1
    assert {r.person_id for r in rows} == {people["a2"]}  # the login's person is kept
    assert record.details["reattributed_sessions"] == 1  # a1's closed anonymous session
    assert record.details["identity_scope"] == "neighbourhood"
    moments = table(stream.spark, stream.settings, "silver.micro_moments").filter("anonymous_id = 'a1'").collect()
    assert [(m.moment_type, m.person_id) for m in moments] == [("repeat_product_view", people["a2"])]  # and its moment
    merges = table(stream.spark, stream.settings, "silver.identity_merges").collect()
    assert [(m.kept_person_id, m.retired_person_id, m.status) for m in merges] == [
        (people["a2"], people["a1"], "active")
    ]
    # killed after the sessions' update but before the moments' (they run side by side): the replay does the rest
    moments_table = DeltaTable.forPath(stream.spark, str(stream.settings.table_path("silver.micro_moments")))
    moments_table.update("anonymous_id = 'a1'", {"person_id": F.lit(people["a1"])})
    changes = IdentityChanges(frozenset({"a1"}), frozenset(), (), ())
    identity_map = table(stream.spark, stream.settings, "silver.identity_map")
    done = stream.spark.createDataFrame([], "session_id STRING, anonymous_id STRING")
    assert silver.reattribute(stream.spark, stream.settings, changes, identity_map, done) == 0  # sessions: done
    moments = table(stream.spark, stream.settings, "silver.micro_moments").filter("anonymous_id = 'a1'").collect()
    assert [m.person_id for m in moments] == [people["a2"]]


def test_every_silver_table_passes_its_quality_suite(stream):
    from spark_jobs.quality import QualityGate
    from spark_jobs.settings import TABLES
    from spark_jobs.silver.profiles import update_profiles
    from spark_jobs.silver.user_features import update_user_features

    product = [("a2", 50 + 60 * i, "product_view", {"product_id": "p-9"}, None, "u-1", "/p/9") for i in range(3)]
    stream.feed([_view("a1", 0), _view("a2", 30, uid="u-1"), ("a2", 40, "scroll", {"scroll_depth": "30"}, None,
                 "u-1", "/"), *product])  # fmt: skip
    stream.feed([_view("a1", 90000, uid="u-1"), _view("a3", 90100)])
    update_user_features(stream.spark, stream.settings, (T0 + timedelta(days=2)).date())
    update_profiles(stream.spark, stream.settings)  # u-1 logged in: a profile
    for name in (t for t in TABLES if t.startswith("silver.")):
        rows = table(stream.spark, stream.settings, name)
        assert rows.count() > 0 or name == "silver.late_events", name
        assert QualityGate.for_table(name).failures(rows) == {}, name


def test_a_failing_session_suite_halts_silver_before_anything_is_merged(stream, tmp_path):
    from spark_jobs.quality import QualityGateHalted

    # silver's rules keep every session within the shipped suite, so a stricter suite stands in for a broken rule
    suites = tmp_path / "expectations"
    shutil.copytree(stream.settings.expectations_dir, suites)
    path = suites / "silver_sessions.json"
    doc = json.loads(path.read_text())
    for expectation in doc["expectations"]:
        if expectation["kwargs"].get("column") == "max_scroll_depth":
            expectation["kwargs"]["max_value"] = 50
    path.write_text(json.dumps(doc))
    stream.settings = replace(stream.settings, quality_policy="halt", expectations_dir=suites)
    stream.feed([_view("a1", 0)])
    impossible = ("a1", 60, "scroll", {"scroll_depth": "75"}, None, None, "/")  # deeper than the suite allows
    with pytest.raises(QualityGateHalted, match=r"expect_column_values_to_be_between\(max_scroll_depth\)"):
        stream.feed([impossible])
    assert stream.sessions() == [("a1", at(0), 1, False)]
    halted = table(stream.spark, stream.settings, "ops.pipeline_runs").filter("quality_status = 'halted'").first()
    assert list(halted.quality_failures) == ["expect_column_values_to_be_between(max_scroll_depth)"]


def test_a_changed_session_timeout_refuses_to_resume_the_checkpoint_before_any_batch(spark, settings):
    from spark_jobs.streaming import CheckpointSettingsChanged

    ensure_tables(spark, settings)
    silver.run(spark, settings)  # the stream's checkpoint now exists, made with a 5-minute timeout
    runs = table(spark, settings, "ops.pipeline_runs").count()
    with pytest.raises(CheckpointSettingsChanged, match="INTENTLAKE_SESSION_TIMEOUT was '5 minutes'"):
        silver.run(spark, replace(settings, session_timeout="10 minutes"))
    assert table(spark, settings, "ops.pipeline_runs").count() == runs


def test_track_calls_without_pages_go_through_silver_and_gold(stream):
    """A server-side source sends track calls with no page at all: the silver batch stores their session
    (it once died on silver.sessions' NOT NULL checkout_started) and gold scores and segments it."""
    stream.feed([
        ("srv-1", 0, "cart_add", {"product_id": "p1"}, None, "u-9", None),
        ("srv-1", 30, "purchase", {"order_id": "o9"}, None, "u-9", None),
        ("srv-2", 10, "search", {"query": "boots"}, None, None, None),
    ])  # fmt: skip
    assert [(a, n) for a, _, n, _ in stream.sessions()] == [("srv-1", 2), ("srv-2", 1)]
    gold.run(stream.spark, stream.settings)
    scores = table(stream.spark, stream.settings, "gold.session_scores").collect()
    assert len(scores) == 2 and all(0 <= r.intent_score <= 100 and r.segment for r in scores)
    assert table(stream.spark, stream.settings, "gold.user_segments").count() == 2


def test_custom_events_are_counted_by_name_rules_read_them_and_bots_are_not_scored(stream, tmp_path):
    """Silver counts custom events by their source name; a segment rule reads the count config names
    (custom_coupon_applied); a bot's session is stored in silver but never scored or segmented."""
    stream.feed([
        ("c-1", 0, "custom:Coupon Applied", {"coupon": "W10"}, None, "u-1", None),
        ("c-1", 20, "custom:Coupon Applied", {}, None, "u-1", None),
        ("c-1", 40, "custom:Video Played", {}, None, "u-1", None),
        ("c-1", 50, "custom:coupon_applied", {}, None, "u-1", None),  # another source's spelling, same feature
        ("c-1", 60, "cart_add", {"product_id": "p1"}, None, "u-1", None),
    ])  # fmt: skip
    stream.feed([("bot-1", 70, "page_view", {}, None, None, "/"), ("bot-1", 75, "custom:Video Played", {},
                                                                   None, None, None)], device_type="bot")  # fmt: skip
    stream.feed([("junk", i, f"custom:kind-{i:03d}", {}, None, None, None) for i in range(105)])
    rows = {r.anonymous_id: r for r in table(stream.spark, stream.settings, "silver.sessions").collect()}
    assert rows["c-1"].custom_events == {"Coupon Applied": 2, "Video Played": 1, "coupon_applied": 1}
    junk = rows["junk"].custom_events  # bounded: 100 names, the rest counted together
    assert len(junk) == 101 and junk["(other names)"] == 5 and sum(junk.values()) == 105
    assert rows["bot-1"].device_type == "bot" and rows["bot-1"].custom_events == {"Video Played": 1}
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", config)
    segments = config / "segments.yaml"
    segments.write_text(segments.read_text().replace("segments:\n", "segments:\n  - name: Coupon Hunter\n"
                                                     "    when: \"custom_coupon_applied >= 3\"\n", 1))  # fmt: skip
    settings = replace(stream.settings, config_dir=config)
    gold.run(stream.spark, settings)
    scores = table(stream.spark, settings, "gold.session_scores").collect()
    sessions = {r.session_id: r.anonymous_id for r in table(stream.spark, settings, "silver.sessions").collect()}
    assert sorted((sessions[r.session_id], r.segment) for r in scores) == [("c-1", "Coupon Hunter"),
                                                                          ("junk", "Standard")]  # fmt: skip
    assert table(stream.spark, settings, "gold.user_segments").count() == 2  # the bot has none
    runs = table(stream.spark, settings, "ops.pipeline_runs").filter("job = 'gold'").collect()
    assert sum(int(r.details["bot_sessions_not_scored"]) for r in runs) == 1


def test_devices_sharing_a_client_session_id_get_distinct_sessions_and_a_stuck_one_is_split(stream):
    """Two devices send the same client session id: two sessions, unique session_ids. A client session id
    that never changes is split at the maximum length; its pieces keep distinct, stable ids across batches
    (a later batch recomputes them without duplicating or renaming any)."""
    stream.settings = replace(stream.settings, max_session_length="1 hour")
    stream.feed([_view("d1", 0, sid="shared"), _view("d2", 10, sid="shared"), _view("d1", 1800, sid="shared")])
    stream.feed([_view("d1", 3700, sid="shared"), _view("d1", 3800, sid="shared")])
    rows = table(stream.spark, stream.settings, "silver.sessions").collect()
    assert len({r.session_id for r in rows}) == len(rows) == 3
    assert sorted((r.anonymous_id, r.client_session_id, r.event_count, r.sessionized_by) for r in rows) == [
        ("d1", "shared", 2, "client_session_id"),
        ("d1", "shared", 2, "max_length"),
        ("d2", "shared", 1, "client_session_id"),
    ]
    ids = {(r.anonymous_id, r.sessionized_by): r.session_id for r in rows}
    second_piece_us = int(at(3700).replace(tzinfo=UTC).timestamp() * 1_000_000)
    assert ids == {("d1", "client_session_id"): client_session_id("d1", "shared"),
                   ("d1", "max_length"): client_session_id("d1", "shared", second_piece_us),
                   ("d2", "client_session_id"): client_session_id("d2", "shared")}  # fmt: skip
    # the first piece is closed, the second open: an event without the client id touches the device, and the
    # recompute must still read the client session from its first piece (or it would rebuild piece 2 alone)
    stream.feed([_view("d1", 3950)])
    stream.feed([_view("d1", 3900, sid="shared")])  # the open piece grows
    again = table(stream.spark, stream.settings, "silver.sessions").collect()
    clients = {(r.anonymous_id, r.sessionized_by): r for r in again if r.client_session_id}
    assert {k: r.session_id for k, r in clients.items()} == ids
    assert sorted(r.event_count for r in clients.values()) == [1, 2, 3]
    assert len(again) == 4 and sum(r.event_count for r in again) == 7  # every event in exactly one session
