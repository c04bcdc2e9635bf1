"""Checks shared by the tests that prove bronze stores each event exactly once."""

from __future__ import annotations

from pyspark.sql import DataFrame, Row, SparkSession

from spark_jobs.settings import Settings


def table(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """A lakehouse table read by path (independent of the session catalog)."""
    return spark.read.format("delta").load(str(settings.table_path(name)))


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
