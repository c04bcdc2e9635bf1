"""Silver: bronze.events -> silver.sessions (event-time sessions with per-session features) and
silver.micro_moments (in-session triggers with evidence).

Each micro-batch of new bronze events names the devices (anonymous ids) it touches; their sessions are
recomputed from all of their bronze events and merged into silver.sessions. Recomputing whole devices
makes late and out-of-order events land in the right session (or merge two sessions they bridge), and
makes a replayed batch harmless. Sessions of other devices close once the event-time watermark passes
their end plus the idle timeout.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.merge import replace_scopes
from spark_jobs.settings import Settings, interval_seconds
from spark_jobs.silver.moments import Thresholds, detect, load_thresholds
from spark_jobs.streaming import BatchRecord, run_stream

JOB = "silver"
VIEW_TYPES = ("page_view", "product_view")


def person_ids(events: DataFrame) -> DataFrame:
    """anonymous_id -> person_id: user:<first login seen on the device>, else anon:<anonymous_id>.

    Deterministic in the input, so a re-run from scratch gives the same ids. (Cross-device identity
    resolution replaces this in silver.identity_map.)
    """
    first_login = F.min_by("user_id", F.when(F.col("user_id").isNotNull(), F.col("occurred_at")))
    return (
        events.groupBy("anonymous_id")
        .agg(first_login.alias("_login"))
        .select(
            "anonymous_id",
            F.when(F.col("_login").isNotNull(), F.concat(F.lit("user:"), "_login"))
            .otherwise(F.concat(F.lit("anon:"), "anonymous_id"))
            .alias("person_id"),
        )
    )


def assign_sessions(events: DataFrame, timeout_seconds: int) -> DataFrame:
    """Add session_key and sessionized_by to each event.

    A client session id is honoured when present. Otherwise a gap of at least the timeout between a
    device's consecutive events (in event time) starts a new session.
    """
    by_device = Window.partitionBy("anonymous_id").orderBy("occurred_at", "event_id")
    without_client = events.filter(F.col("session_id").isNull())
    gap = F.col("occurred_at").cast("double") - F.lag("occurred_at").over(by_device).cast("double")
    is_new = F.when(gap.isNull() | (gap >= timeout_seconds), 1).otherwise(0)
    idle = (
        without_client.withColumn("_new", is_new)
        .withColumn("_seq", F.sum("_new").over(by_device.rowsBetween(Window.unboundedPreceding, 0)))
        .withColumn("session_key", F.concat_ws("#", "anonymous_id", F.col("_seq").cast("string")))
        .withColumn("sessionized_by", F.lit("idle_timeout"))
        .drop("_new", "_seq")
    )
    client = (
        events.filter(F.col("session_id").isNotNull())
        .withColumn("session_key", F.concat_ws("#", "anonymous_id", F.lit("client"), "session_id"))
        .withColumn("sessionized_by", F.lit("client_session_id"))
    )
    return idle.unionByName(client)


def session_id_column() -> Column:
    """The session id: the client's when sent, else a stable hash of the device and the session start."""
    return F.coalesce(
        F.col("client_session_id"),
        F.concat(
            F.lit("s-"),
            F.substring(
                F.sha2(F.concat_ws("|", "anonymous_id", F.unix_micros("session_start").cast("string")), 256),
                1,
                32,
            ),
        ),
    )


def _count_of(event_type: str) -> Column:
    return F.count_if(F.col("event_type") == event_type).cast("int")


def build_sessions(events: DataFrame, timeout_seconds: int, watermark_us: int | None = None) -> DataFrame:
    """Canonical events -> one row per session with its features, in the silver.sessions layout.

    watermark_us: the event time (epoch microseconds) up to which the stream is complete; a session
    whose end plus the timeout is at or before it is closed. Without one, no session is closed.
    """
    sessions = assign_sessions(events, timeout_seconds)
    in_session = Window.partitionBy("session_key").orderBy("occurred_at", "event_id")
    sessions = sessions.withColumn(
        "_dwell",
        F.when(
            F.col("event_type").isin(*VIEW_TYPES),
            F.lead("occurred_at").over(in_session).cast("double") - F.col("occurred_at").cast("double"),
        ),
    )
    start, end = F.min("occurred_at"), F.max("occurred_at")
    agg = sessions.groupBy("session_key", "anonymous_id", "sessionized_by").agg(
        F.first("session_id", ignorenulls=True).alias("client_session_id"),
        F.max_by("user_id", F.when(F.col("user_id").isNotNull(), F.col("occurred_at"))).alias("user_id"),
        start.alias("session_start"),
        end.alias("session_end"),
        F.count(F.lit(1)).cast("int").alias("event_count"),
        F.count_distinct(F.when(F.col("event_type").isin(*VIEW_TYPES), F.col("page.path")))
        .cast("int")
        .alias("page_depth"),
        F.coalesce(F.avg("_dwell"), F.lit(0.0)).alias("dwell_seconds"),
        F.coalesce(F.max(F.col("properties")["scroll_depth"].cast("double")), F.lit(0.0)).alias("max_scroll_depth"),
        _count_of("product_view").alias("product_views"),
        _count_of("cart_add").alias("cart_adds"),
        _count_of("wishlist_add").alias("wishlist_adds"),
        _count_of("search").alias("searches"),
        F.min_by("device.type", F.struct("occurred_at", "event_id")).alias("device_type"),
        F.min_by("context.timezone", F.struct("occurred_at", "event_id")).alias("timezone"),
        F.max(F.col("event_type") == "purchase").alias("converted"),
    )
    closed = (
        F.lit(False)
        if watermark_us is None
        else F.unix_micros("session_end") + timeout_seconds * 1_000_000 <= F.lit(watermark_us)
    )
    result = (
        agg.join(person_ids(events), "anonymous_id")
        .withColumn("session_id", session_id_column())
        .withColumn("duration_seconds", F.col("session_end").cast("double") - F.col("session_start").cast("double"))
        .withColumn("is_closed", closed)
        .withColumn("session_date", F.to_date("session_start"))
    )
    return result.select(*table_contract("silver.sessions").column_names)


_MOMENT_INPUT = ("session_key", "anonymous_id", "session_id", "event_id", "event_type", "occurred_at", "properties")
_MOMENT_OUTPUT = (
    "session_key STRING, anonymous_id STRING, client_session_id STRING, session_start TIMESTAMP, "
    "moment_type STRING, detected_at TIMESTAMP, event_ids ARRAY<STRING>, evidence_json STRING"
)


def _moments_of_session(thresholds: Thresholds, watermark_us: int | None):
    watermark = None if watermark_us is None else datetime.fromtimestamp(watermark_us / 1_000_000, UTC)
    output = to_arrow_schema(StructType.fromDDL(_MOMENT_OUTPUT))

    def per_session(events: pa.Table) -> pa.Table:
        rows = events.to_pylist()
        for row in rows:  # Arrow maps arrive as (key, value) pairs; times as UTC-aware datetimes
            row["properties"] = dict(row["properties"] or [])
            if row["occurred_at"].tzinfo is None:
                row["occurred_at"] = row["occurred_at"].replace(tzinfo=UTC)
        moments = detect(rows, thresholds, watermark)
        first = rows[0]
        client = next((r["session_id"] for r in rows if r["session_id"] is not None), None)
        start = min(r["occurred_at"] for r in rows)
        found = [
            {"session_key": first["session_key"], "anonymous_id": first["anonymous_id"], "client_session_id": client,
             "session_start": start, "moment_type": m.moment_type, "detected_at": m.detected_at,
             "event_ids": list(m.event_ids), "evidence_json": json.dumps(m.evidence, sort_keys=True)}
            for m in moments
        ]  # fmt: skip
        return pa.Table.from_pylist(found, schema=output)

    return per_session


def build_moments(
    events: DataFrame, timeout_seconds: int, thresholds: Thresholds, watermark_us: int | None = None
) -> DataFrame:
    """Canonical events -> silver.micro_moments rows: every micro-moment of every session, with evidence."""
    keyed = assign_sessions(events, timeout_seconds).select(
        *_MOMENT_INPUT, F.col("context.geo.lat").alias("lat"), F.col("context.geo.lon").alias("lon")
    )
    found = keyed.groupBy("session_key").applyInArrow(_moments_of_session(thresholds, watermark_us), _MOMENT_OUTPUT)
    return (
        found.join(person_ids(events), "anonymous_id")
        .withColumn("session_id", session_id_column())
        .withColumn(
            "moment_id",
            F.substring(F.sha2(F.concat_ws("|", "session_id", "moment_type", F.col("event_ids")[0]), 256), 1, 32),
        )
        .withColumn("evidence", F.from_json("evidence_json", "MAP<STRING, STRING>"))
        .withColumn("moment_date", F.to_date("detected_at"))
        .select(*table_contract("silver.micro_moments").column_names)
    )


def event_time_watermark(bronze: DataFrame, allowed_lateness_seconds: int) -> int | None:
    """max(occurred_at) in bronze minus the allowed lateness, in epoch microseconds (None when empty)."""
    latest = bronze.agg(F.max(F.unix_micros("occurred_at")).alias("m")).collect()[0].m
    return None if latest is None else latest - allowed_lateness_seconds * 1_000_000


def process_silver_batch(
    spark: SparkSession,
    settings: Settings,
    new_events: DataFrame,
    batch_id: int,
    query_id: str,
    thresholds: Thresholds | None = None,
) -> BatchRecord:
    """Recompute the sessions and micro-moments of every device in this batch of bronze events; merge them."""
    record = BatchRecord(JOB, query_id, batch_id)
    thresholds = thresholds or load_thresholds(settings.micro_moments_file)
    timeout = interval_seconds(settings.session_timeout)
    devices = new_events.select("anonymous_id").distinct().persist()
    history = None
    try:
        with record.phase("read"):
            record.input_rows = new_events.count()
        bronze = spark.read.format("delta").load(str(settings.table_path("bronze.events")))
        watermark_us = event_time_watermark(bronze, interval_seconds(settings.allowed_lateness))
        # read once: sessions (whose MERGE reads its source more than once) and moments both use it
        history = bronze.join(devices, "anonymous_id", "left_semi").persist()
        sessions = build_sessions(history, timeout, watermark_us)
        close_passed = None
        if watermark_us is not None:
            close_passed = (
                f"NOT t.is_closed AND unix_micros(t.session_end) + {timeout * 1_000_000} <= {watermark_us}",
                {"is_closed": F.lit(True)},
            )
        record.details["watermark_us"] = str(watermark_us)
        with record.phase("merge"):
            counts = replace_scopes(
                spark,
                settings,
                "silver.sessions",
                sessions,
                ("session_id", "anonymous_id"),
                "anonymous_id",
                devices,
                close_others=close_passed,
            )
        record.accepted_rows = counts.inserted + counts.updated
        record.details.update(counts.as_details())
        with record.phase("moments"):
            moments = build_moments(history, timeout, thresholds, watermark_us)
            found = replace_scopes(
                spark, settings, "silver.micro_moments", moments, ("moment_id",), "anonymous_id", devices
            )
        record.details.update(found.as_details("moments"))
        record.write(spark, settings)
        return record
    finally:
        if history is not None:
            history.unpersist()
        devices.unpersist()


def bronze_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """New rows of bronze.events as a stream (bronze is append-only; erasures are skipped here)."""
    return (
        spark.readStream.format("delta")
        .option("skipChangeCommits", "true")
        .load(str(settings.table_path("bronze.events")))
    )


def run(spark: SparkSession, settings: Settings, trigger: str | None = None, wait: bool = True) -> StreamingQuery:
    """Start the silver stream (availableNow by default: catch up, then stop)."""
    ensure_tables(spark, settings)
    thresholds = load_thresholds(settings.micro_moments_file)  # a bad threshold stops the run before data moves

    def process(events: DataFrame, batch_id: int, query_id: str) -> None:
        process_silver_batch(spark, settings, events, batch_id, query_id, thresholds)

    return run_stream(bronze_stream(spark, settings), JOB, settings, process, trigger or settings.trigger, wait)
