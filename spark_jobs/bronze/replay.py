"""`intentlake replay-quarantine`: re-ingest selected quarantined rows after a fix.

A fix is whatever made the rows unacceptable: an adapter that learned a new shape, a schema version
added to the schema folder, a limit raised in settings, or a quality rule corrected. The raw payloads are
parsed again by today's code and settings, without the watermark (replay is a deliberate act), then
deduplicated against *all* of bronze.events, so a row whose event arrived again meanwhile is counted a
duplicate rather than stored twice. Each replayed quarantine row records when and with what outcome:
accepted, duplicate, or rejected: <reason> (those can be replayed again after the next fix).

A crash at any point is safe to re-run: events written before the crash are found in bronze and counted
as duplicates by the next replay.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.bronze.job import first_of_each_event, not_yet_in_bronze, parse_lines, to_bronze_rows
from spark_jobs.bronze.normalize import Limits, Reason, SchemaRegistry
from spark_jobs.bronze.vocabulary import vocabulary_at
from spark_jobs.contracts import ensure_tables, read_table
from spark_jobs.quality import QualityGate
from spark_jobs.settings import Settings
from spark_jobs.streaming import BatchRecord, idempotent_append

JOB = "replay-quarantine"


@dataclass(frozen=True)
class Selection:
    """Which quarantine rows to replay; every filter given must hold. Rows already replayed successfully
    (accepted or duplicate) are never selected again."""

    reasons: tuple[str, ...] = ()
    since: datetime | None = None  # quarantined_at >= since
    until: datetime | None = None  # quarantined_at < until
    ingest_batch: str | None = None
    event_ids: tuple[str, ...] = ()

    def apply(self, quarantine: DataFrame) -> DataFrame:
        rows = quarantine.filter(F.col("replay_outcome").isNull() | F.col("replay_outcome").startswith("rejected"))
        if self.reasons:
            rows = rows.filter(F.col("reason").isin(*self.reasons))
        if self.since is not None:
            rows = rows.filter(F.col("quarantined_at") >= F.lit(self.since))
        if self.until is not None:
            rows = rows.filter(F.col("quarantined_at") < F.lit(self.until))
        if self.ingest_batch:
            rows = rows.filter(F.col("ingest_batch") == self.ingest_batch)
        if self.event_ids:
            rows = rows.filter(F.col("event_id").isin(*self.event_ids))
        return rows


@dataclass
class ReplayResult:
    replay_id: str
    selected: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> rows still rejected

    def summary(self) -> str:
        still = ", ".join(f"{n} {reason}" for reason, n in sorted(self.rejected.items())) or "none"
        return (
            f"replay {self.replay_id}: {self.selected} quarantined rows selected -> {self.accepted} accepted into "
            f"bronze.events, {self.duplicates} duplicates of events bronze already holds, still rejected: {still}"
        )


def _row_key(ingest_batch: str, source_file: str, raw: str) -> F.Column:
    """Identity of a quarantine row (the table has no id column): its batch, its source and its payload."""
    return F.sha2(F.concat_ws("\u0001", ingest_batch, F.coalesce(source_file, F.lit("")), raw), 256)


def replay_quarantine(
    spark: SparkSession, settings: Settings, selection: Selection, *, dry_run: bool = False
) -> ReplayResult:
    """Re-parse the selected quarantine rows; append the ones now acceptable and new; mark every selected row."""
    ensure_tables(spark, settings)
    result = ReplayResult(replay_id=uuid.uuid4().hex[:12])
    ingest_batch = f"replay/{result.replay_id}"
    record = BatchRecord(JOB, result.replay_id, 0)
    keys = settings.dedup_key_columns
    quarantine_path = settings.table_path("bronze.quarantine")
    selected = (
        selection.apply(read_table(spark, settings, "bronze.quarantine"))
        .withColumn("_key", _row_key(F.col("ingest_batch"), F.col("source_file"), F.col("raw")))
        .persist()
    )
    parsed = candidates = outcome = None
    try:
        result.selected = selected.count()
        if not result.selected:
            return result
        # the row key travels through the parser as the record's source; the real source is joined back
        lines = selected.select(F.col("raw").alias("value"), F.col("_key").alias("source_file"))
        registry = SchemaRegistry.load(settings.schema_dir)
        vocabulary = vocabulary_at(settings.event_vocabulary_file)
        parsed = (
            parse_lines(lines, Limits.from_settings(settings), registry, vocabulary)
            .withColumnRenamed("source_file", "_key")
            .join(selected.select("_key", "source_file").dropDuplicates(["_key"]), "_key")
            .persist()
        )
        bronze = read_table(spark, settings, "bronze.events")
        accepted = parsed.filter("is_accepted")
        candidates = not_yet_in_bronze(first_of_each_event(accepted, keys), bronze, None, ingest_batch, keys)
        candidates = candidates.persist()
        failures = (
            QualityGate.for_table("bronze.events", settings.expectations_dir).failures(candidates)
            if candidates.take(1)
            else {}
        )
        failed_ids = sorted({i for ids in failures.values() for i in ids})
        fresh = candidates.filter(~F.col("event_id").isin(*failed_ids)) if failed_ids else candidates
        fresh_keys = fresh.select("_key").distinct().withColumn("_fresh", F.lit(True))
        failed_quality = F.col("event_id").isin(*failed_ids) if failed_ids else F.lit(False)
        outcome = (
            parsed.join(fresh_keys, "_key", "left")
            .withColumn(
                "_outcome",
                F.when(F.col("_fresh"), F.lit(3))  # any record of the row stored: accepted
                .when(F.col("is_accepted") & failed_quality, F.lit(1))
                .when(F.col("is_accepted"), F.lit(2))  # parsed, but bronze already holds it
                .otherwise(F.lit(0)),
            )
            .groupBy("_key")
            .agg(F.max("_outcome").alias("o"), F.min("reason").alias("reason"))
            .select(
                "_key",
                F.when(F.col("o") == 3, "accepted")
                .when(F.col("o") == 2, "duplicate")
                .when(F.col("o") == 1, F.lit(f"rejected: {Reason.QUALITY.value}"))
                .otherwise(F.concat(F.lit("rejected: "), F.col("reason")))
                .alias("outcome"),
            )
        ).persist()
        counts = {r.outcome: r["count"] for r in outcome.groupBy("outcome").count().collect()}
        result.accepted = counts.pop("accepted", 0)
        result.duplicates = counts.pop("duplicate", 0)
        result.rejected = {k.removeprefix("rejected: "): v for k, v in counts.items()}
        if dry_run:
            return result
        record.input_rows, record.accepted_rows = result.selected, result.accepted
        record.duplicate_rows = result.duplicates
        record.quarantined_rows = sum(result.rejected.values())
        record.quarantine_reasons = dict(result.rejected)
        rows = to_bronze_rows(fresh, record.started_at, ingest_batch)
        idempotent_append(rows, settings.table_path("bronze.events"), f"{JOB}-{result.replay_id}", 0)
        now = datetime.now(UTC)
        (
            DeltaTable.forPath(spark, str(quarantine_path))
            .alias("q")
            .merge(
                outcome.alias("o"),
                _row_key(F.col("q.ingest_batch"), F.col("q.source_file"), F.col("q.raw")) == F.col("o._key"),
            )
            .whenMatchedUpdate(set={"replayed_at": F.lit(now), "replay_outcome": F.col("o.outcome")})
            .execute()
        )
        record.details["selection"] = repr(selection)
        record.write(spark, settings)
        return result
    finally:
        for cached in (selected, parsed, candidates, outcome):
            if cached is not None:
                cached.unpersist()
