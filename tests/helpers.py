"""Checks shared by the tests: reading a table, comparing two lakehouses' tables, and bronze's exactly-once."""

from __future__ import annotations

import re

from pyspark.sql import DataFrame, Row, SparkSession

from spark_jobs.settings import Settings


def table(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """A lakehouse table read by path (independent of the session catalog)."""
    return spark.read.format("delta").load(str(settings.table_path(name)))


# Columns that say when or in which batch a run did its work, not what it computed: two correct runs of the same
# work differ there, so comparisons of two lakehouses leave them out (`rows`). Every other column must match.
BOOKKEEPING: dict[str, tuple[str, ...]] = {
    "bronze.events": ("ingested_at",),
    "bronze.quarantine": ("quarantined_at", "quarantine_date"),  # when the batch ran, as ingested_at
    "silver.sessions": ("updated_at",),
    "silver.late_events": ("silver_batch",),
    "gold.user_segments_history": ("valid_from", "valid_to"),  # gold.user_segments commit times
    "gold.content_assignments": ("evaluated_at",),
    # the table version a gate checked up to: a micro-batch replayed after a kill commits its MERGE again (same
    # rows, one version more), so the mark is a version later than a clean run's; checked_rows is compared
    "ops.quality_gates": ("passed_at", "passed_version"),
    # query_id: a random id a stream's checkpoint gets when it is made; details: timings and what each MERGE
    # changed (a replayed batch finds its rows written)
    "ops.pipeline_runs": ("query_id", "started_at", "duration_ms", "run_date", "details"),
    "ops.models": ("registered_at", "promoted_at", "retired_at"),
    "ops.sync_state": ("synced_at",),
    "ops.erasure_requests": ("suppressed_before",),
}


def _plain(value):
    return tuple(sorted(value.items())) if isinstance(value, dict) else value  # a MAP's entry order is not data


def rows(spark: SparkSession, settings: Settings, name: str, drop: tuple[str, ...] | None = None) -> list[tuple]:
    """A table's rows, sorted, as tuples of strings, without `drop` (default: its BOOKKEEPING columns)."""
    frame = table(spark, settings, name).drop(*(BOOKKEEPING.get(name, ()) if drop is None else drop))
    return sorted(tuple(str(_plain(v)) for v in row) for row in frame.collect())


_QUERY_ID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/")


def portable_rows(spark: SparkSession, settings: Settings, name: str) -> list[tuple]:
    """`rows`, comparable between two lakehouses: the landing zone's path (bronze keeps each line's source
    file) is written as <landing>, and a stream's query id (the random id its checkpoint got when it was made;
    bronze's ingest_batch is <query id>/<batch>) as <query>."""
    where = str(settings.landing)
    return sorted(
        tuple(_QUERY_ID.sub("<query>/", value.replace(where, "<landing>")) for value in row)
        for row in rows(spark, settings, name)
    )


def bronze_totals(spark: SparkSession, settings: Settings) -> Row:
    """Sums of bronze's ops.pipeline_runs counts: i(nput), a(ccepted), q(uarantined), d(uplicates), e(rased:
    an erased person's events received before the erasure and read only after it)."""
    return (
        table(spark, settings, "ops.pipeline_runs")
        .filter("job IN ('bronze', 'bronze-kafka')")
        .selectExpr(
            "coalesce(sum(input_rows), 0) i",
            "coalesce(sum(accepted_rows), 0) a",
            "coalesce(sum(quarantined_rows), 0) q",
            "coalesce(sum(duplicate_rows), 0) d",
            "coalesce(sum(cast(details['erased_rows'] AS BIGINT)), 0) e",
        )
        .first()
    )


def assert_each_event_once(spark: SparkSession, settings: Settings, *, events: int, malformed: int, lines: int) -> None:
    """Bronze holds every event exactly once, every malformed line in quarantine, one run row per batch,
    and the run counts conserve the input: lines = accepted + quarantined + duplicates (+ erased)."""
    stored = table(spark, settings, "bronze.events")
    quarantine = table(spark, settings, "bronze.quarantine")
    reasons = {r.reason: r["count"] for r in quarantine.groupBy("reason").count().collect()}
    counts = (stored.count(), stored.select("event_id").distinct().count())
    assert counts == (events, events), f"bronze rows, distinct ids {counts}; expected {events}; quarantine {reasons}"
    assert quarantine.count() == malformed, f"quarantine {reasons}; expected {malformed} rows"
    runs = table(spark, settings, "ops.pipeline_runs")
    assert runs.count() == runs.select("query_id", "batch_id").distinct().count()
    totals = bronze_totals(spark, settings)
    assert totals.i == lines == totals.a + totals.q + totals.d + totals.e
