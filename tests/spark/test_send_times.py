"""gold.engagement_rhythm and gold.send_times from a handful of sessions (real Spark and Delta)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.gold.rhythm import update_send_times
from tests.helpers import table
from tests.spark.test_gold import T0, _sessions

pytestmark = pytest.mark.spark

NOW = T0 + timedelta(days=1)


def _write(spark, settings, name, frame):
    frame.write.format("delta").mode("append").save(str(settings.table_path(name)))


def test_best_hour_is_the_persons_own_else_their_segments_else_everyones(spark, settings):
    ensure_tables(spark, settings, ("silver.sessions", "gold.user_segments"))
    # (session, person, local hour, days before T0); every session closed, 3 minutes long
    plan = [
        ("p1-a", "p1", 19, 0), ("p1-b", "p1", 19, 1), ("p1-c", "p1", 19, 2), ("p1-d", "p1", 8, 3),
        ("p1-old", "p1", 3, 40),  # ended before the 28-day window: not counted
        ("p2-a", "p2", 8, 0),  # one session: too few of their own
        ("p3-a", "p3", 21, 0), ("p3-b", "p3", 21, 1), ("p3-c", "p3", 21, 2),
        ("p5-a", "p5", 10, 0), ("p5-b", "p5", 10, 1), ("p5-c", "p5", 9, 2), ("p5-d", "p5", 9, 3),  # a tie
    ]  # fmt: skip
    base = _sessions(spark, [(sid, pid, -days * 24 * 60, 30.0, 0, "desktop", 2, 5) for sid, pid, _, days in plan])
    hours = spark.createDataFrame([(sid, hour) for sid, _, hour, _ in plan], "session_id STRING, h INT")
    sessions = (
        base.join(hours, "session_id")
        .withColumn("local_hour", F.col("h"))
        .withColumn("local_weekday", (F.dayofweek("session_start") + 5) % 7 + 1)  # ISO, as silver writes it
        .withColumn("timezone", F.lit("Europe/Paris"))
        .withColumn("converted", F.col("session_id") == "p1-a")
        .select(*table_contract("silver.sessions").column_names)
    )
    open_session = _sessions(spark, [("p4-open", "p4", 0, 30.0, 0, "desktop", 2, 5)]).withColumn(
        "is_closed", F.lit(False)
    )  # an open session does not count yet
    _write(spark, settings, "silver.sessions", sessions.unionByName(open_session.withColumn("local_hour", F.lit(5))))
    segments = [("p1", "Standard"), ("p2", "High Intent"), ("p3", "High Intent"), ("p4", "Bounce Risk"),
                ("p5", "Standard")]  # fmt: skip
    _write(
        spark,
        settings,
        "gold.user_segments",
        spark.createDataFrame(
            [(p, s, 50.0, f"s-{p}", T0, 1, "weighted-v1") for p, s in segments],
            table_contract("gold.user_segments").schema(),
        ),
    )

    result = update_send_times(spark, settings, now=NOW)

    sent = {
        r.person_id: (r.best_local_hour, r.source, r.confidence, r.sessions)
        for r in table(spark, settings, "gold.send_times").collect()
    }
    assert sent == {
        "p1": (19, "person", 0.75, 4),  # 3 of their 4 sessions in the window start at 19:00
        "p2": (21, "segment", 0.375, 1),  # High Intent: 3 of 4 sessions at 21:00, halved
        "p3": (21, "person", 1.0, 3),
        "p4": (19, "everyone", 0.125, 0),  # 19 and 21 tie at 3 of 12: the earlier hour, halved
        "p5": (9, "person", 0.5, 4),  # 9 and 10 tie at 2 of 4: the earlier hour
    }
    assert result.send_times == {"person": 3, "segment": 1, "everyone": 1}
    rows = table(spark, settings, "gold.send_times").collect()
    zones = {r.person_id: r.timezone for r in rows}
    assert zones == {
        "p1": "Europe/Paris",
        "p2": "Europe/Paris",
        "p3": "Europe/Paris",
        "p4": "UTC",
        "p5": "Europe/Paris",
    }
    assert {r.window_end for r in rows} == {NOW}
    rhythm = table(spark, settings, "gold.engagement_rhythm")

    def by_hour(scope, key):  # cells are per weekday and hour; summed over weekdays
        cells = rhythm.filter((F.col("scope") == scope) & (F.col("scope_key") == key))
        rows = cells.groupBy("local_hour").agg(F.sum("sessions").alias("n"), F.sum("conversions").alias("c"))
        return {r.local_hour: (r.n, r.c) for r in rows.collect()}

    assert by_hour("person", "p1") == {19: (3, 1), 8: (1, 0)}
    assert by_hour("segment", "High Intent") == {8: (1, 0), 21: (3, 0)}
    assert by_hour("person", "p4") == {}
    assert abs(sum(r.share for r in rhythm.filter("scope_key = 'p1'").collect()) - 1.0) < 1e-9

    update_send_times(spark, settings, now=NOW)  # a re-run replaces, never adds
    assert table(spark, settings, "gold.send_times").count() == len(segments)
