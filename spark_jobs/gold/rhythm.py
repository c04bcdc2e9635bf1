"""Temporal rhythm and send times: silver.sessions -> gold.engagement_rhythm and gold.send_times.

A batch job (`intentlake send-times`, scheduled by Airflow): the closed sessions that ended in the
window before now are counted by their local start hour and weekday (the user's own zone, from silver's
context), per person and per current segment. A person's best send hour is the hour their sessions most
often start in; with fewer than `min_person_sessions` sessions the segment's best hour is used, and with
no segment sessions either, everyone's. Both tables are rewritten whole in one commit each, so a re-run
replaces, never adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.config import InvalidConfigError, read_mapping
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.settings import Settings
from spark_jobs.silver.sessions import not_bots

RHYTHM, SEND_TIMES = "gold.engagement_rhythm", "gold.send_times"
FALLBACK_DISCOUNT = 0.5  # a borrowed hour is at most half as sure as the source's own share
_KEYS = {"window_days", "min_person_sessions"}


@dataclass(frozen=True)
class RhythmConfig:
    window_days: int
    min_person_sessions: int


def _positive_int(path: Path, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfigError(path, key, f"needs a whole number, at least 1; got {value!r}")
    return value


def load_rhythm_config(path: Path) -> RhythmConfig:
    """Read and check config/send_times.yaml; every problem names the file and the key."""
    doc = read_mapping(path, _KEYS, "window_days and min_person_sessions")
    return RhythmConfig(
        _positive_int(path, "window_days", doc.get("window_days")),
        _positive_int(path, "min_person_sessions", doc.get("min_person_sessions")),
    )


def _counted(frame: DataFrame, scope: str, key: str, window: tuple[datetime, datetime]) -> DataFrame:
    cells = frame.groupBy(F.col(key).alias("scope_key"), "local_weekday", "local_hour").agg(
        F.count(F.lit(1)).cast("int").alias("sessions"), F.count_if("converted").cast("int").alias("conversions")
    )
    total = F.sum("sessions").over(Window.partitionBy("scope_key"))
    return cells.select(
        F.lit(scope).alias("scope"),
        "scope_key",
        "local_weekday",
        "local_hour",
        "sessions",
        "conversions",
        (F.col("sessions") / total).alias("share"),
        F.lit(window[0]).alias("window_start"),
        F.lit(window[1]).alias("window_end"),
    )


def build_rhythm(sessions: DataFrame, segments: DataFrame, window: tuple[datetime, datetime]) -> DataFrame:
    """gold.engagement_rhythm rows from silver.sessions and gold.user_segments, for sessions that closed
    with an end in [window start, window end) and a known local time."""
    start, end = window
    counted = sessions.filter(
        F.col("is_closed")
        & (F.col("session_end") >= F.lit(start))
        & (F.col("session_end") < F.lit(end))
        & F.col("local_hour").isNotNull()
    ).select("person_id", "local_weekday", "local_hour", "converted")
    in_segment = counted.join(segments.select("person_id", "segment"), "person_id")
    rhythm = _counted(counted, "person", "person_id", window).unionByName(
        _counted(in_segment, "segment", "segment", window)
    )
    return rhythm.select(*table_contract(RHYTHM).column_names)


def _best_hours(rhythm: DataFrame) -> DataFrame:
    """(scope, scope_key) -> best_local_hour, its share of the key's sessions, and the key's sessions."""
    by_hour = rhythm.groupBy("scope", "scope_key", "local_hour").agg(F.sum("sessions").alias("n"))
    key = Window.partitionBy("scope", "scope_key")
    ranked = by_hour.withColumn("_total", F.sum("n").over(key)).withColumn(
        "_rank", F.row_number().over(key.orderBy(F.col("n").desc(), F.col("local_hour")))
    )
    return ranked.filter("_rank = 1").select(
        "scope",
        "scope_key",
        F.col("local_hour").alias("best_local_hour"),
        (F.col("n") / F.col("_total")).alias("share"),
        F.col("_total").cast("int").alias("total"),
    )


def build_send_times(
    rhythm: DataFrame, sessions: DataFrame, segments: DataFrame, cfg: RhythmConfig, window_end: datetime
) -> DataFrame:
    """gold.send_times: one row per person of gold.user_segments (everyone a sync may address)."""
    best = _best_hours(rhythm)
    own = best.filter("scope = 'person'").select(
        F.col("scope_key").alias("person_id"),
        F.col("best_local_hour").alias("own_hour"),
        F.col("share").alias("own_share"),
        F.col("total").alias("own_sessions"),
    )
    by_segment = best.filter("scope = 'segment'").select(
        F.col("scope_key").alias("segment"),
        F.col("best_local_hour").alias("segment_hour"),
        F.col("share").alias("segment_share"),
    )
    everyone = (
        rhythm.filter("scope = 'person'")
        .groupBy("local_hour")
        .agg(F.sum("sessions").alias("n"))
        .select("local_hour", "n", (F.col("n") / F.sum("n").over(Window.partitionBy())).alias("share"))
        .orderBy(F.col("n").desc(), "local_hour")
        .limit(1)
        .select(F.col("local_hour").alias("everyone_hour"), F.col("share").alias("everyone_share"))
    )
    latest_zone = (
        sessions.filter(F.col("timezone").isNotNull())
        .groupBy("person_id")
        .agg(F.max_by("timezone", "session_start").alias("timezone"))
    )
    enough = F.coalesce(F.col("own_sessions"), F.lit(0)) >= cfg.min_person_sessions
    source = (
        F.when(enough, "person")
        .when(F.col("segment_hour").isNotNull(), "segment")
        .when(F.col("everyone_hour").isNotNull(), "everyone")
    )
    chosen = (
        segments.select("person_id", "segment")
        .join(own, "person_id", "left")
        .join(by_segment, "segment", "left")
        .crossJoin(everyone)
        .join(latest_zone, "person_id", "left")
        .withColumn("source", source)
        .filter(F.col("source").isNotNull())
    )
    own_pick = F.col("source") == "person"
    segment_pick = F.col("source") == "segment"
    hour = (
        F.when(own_pick, F.col("own_hour")).when(segment_pick, F.col("segment_hour")).otherwise(F.col("everyone_hour"))
    )
    share = (
        F.when(own_pick, F.col("own_share"))
        .when(segment_pick, F.col("segment_share") * FALLBACK_DISCOUNT)
        .otherwise(F.col("everyone_share") * FALLBACK_DISCOUNT)
    )
    return chosen.select(
        "person_id",
        hour.cast("int").alias("best_local_hour"),
        "timezone",
        "source",
        F.round(share, 4).alias("confidence"),
        F.coalesce(F.col("own_sessions"), F.lit(0)).cast("int").alias("sessions"),
        "segment",
        F.lit(window_end).alias("window_end"),
    ).select(*table_contract(SEND_TIMES).column_names)


@dataclass(frozen=True)
class RhythmResult:
    rhythm_rows: int
    send_times: dict[str, int]  # persons by source
    window: tuple[datetime, datetime]


def update_send_times(spark: SparkSession, settings: Settings, now: datetime | None = None) -> RhythmResult:
    """Rewrite gold.engagement_rhythm and gold.send_times from the sessions of the window before `now`."""
    cfg = load_rhythm_config(settings.send_times_file)
    ensure_tables(spark, settings, ("silver.sessions", "gold.user_segments", RHYTHM, SEND_TIMES))
    now = now or datetime.now(UTC)
    end = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)  # naive = UTC; aware for F.lit
    window = (end - timedelta(days=cfg.window_days), end)

    sessions, segments = (
        not_bots(read_table(spark, settings, "silver.sessions")),
        read_table(spark, settings, "gold.user_segments"),
    )
    rhythm = build_rhythm(sessions, segments, window).localCheckpoint(eager=True)
    send_times = build_send_times(rhythm, sessions, segments, cfg, end).localCheckpoint(eager=True)
    rhythm.write.format("delta").mode("overwrite").save(str(settings.table_path(RHYTHM)))
    send_times.write.format("delta").mode("overwrite").save(str(settings.table_path(SEND_TIMES)))
    by_source = {r.source: r.n for r in send_times.groupBy("source").agg(F.count(F.lit(1)).alias("n")).collect()}
    return RhythmResult(rhythm.count(), by_source, window)
