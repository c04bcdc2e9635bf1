"""Bronze: landing-zone NDJSON -> bronze.events (canonical, deduplicated) + bronze.quarantine.

Every input line ends in exactly one place: bronze.events, bronze.quarantine (with a reason), or the
batch's duplicate count; ops.pipeline_runs records the counts per micro-batch. Writes are idempotent
(Delta txnAppId/txnVersion per micro-batch), so a job killed at any point and restarted on its
checkpoint writes each row once.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from spark_jobs.bronze.normalize import DEFAULT_LIMITS, Limits, RejectedEvent, decode_record, normalize_records
from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.settings import Settings, interval_seconds
from spark_jobs.streaming import BatchRecord, idempotent_append, run_stream

JOB = "bronze"
LINEAGE_COLUMNS = ("event_date", "ingested_at", "source_file", "ingest_batch")
_TIMESTAMP_FIELDS = ("occurred_at", "received_at")


def parsed_schema() -> StructType:
    """Parser output: the canonical columns of bronze.events (all nullable) plus the verdict."""
    canonical = [
        StructField(f.name, f.dataType, True)
        for f in table_contract("bronze.events").schema().fields
        if f.name not in LINEAGE_COLUMNS
    ]
    verdict = [
        StructField("is_accepted", BooleanType(), False),
        StructField("reason", StringType(), True),
        StructField("detail", StringType(), True),
        StructField("raw", StringType(), True),
        StructField("source_file", StringType(), True),
    ]
    return StructType(canonical + verdict)


def _arrow_rows(event: dict) -> dict:
    for name in _TIMESTAMP_FIELDS:
        event[name] = datetime.fromisoformat(event[name])
    return event


def _parse_batches(schema: StructType, limits: Limits):
    arrow_schema = to_arrow_schema(schema)
    canonical_names = [
        f.name for f in schema.fields if f.name not in ("is_accepted", "reason", "detail", "raw", "source_file")
    ]
    empty = dict.fromkeys(canonical_names)

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            records = batch.column("value").to_pylist()
            files = batch.column("source_file").to_pylist()
            rows = []
            for record, source_file in zip(records, files, strict=True):
                try:
                    outcomes = normalize_records(decode_record(record), limits)
                except RejectedEvent as rejected:  # not text at all
                    raw = record.decode("utf-8", "replace") if isinstance(record, bytes) else (record or "")
                    outcomes = [(raw, rejected)]
                for raw, outcome in outcomes:
                    if isinstance(outcome, RejectedEvent):
                        rows.append({**empty, "event_id": outcome.event_id, "is_accepted": False,
                                     "reason": outcome.reason.value, "detail": outcome.detail, "raw": raw,
                                     "source_file": source_file})  # fmt: skip
                    else:
                        rows.append({**_arrow_rows(outcome), "is_accepted": True, "reason": None, "detail": None,
                                     "raw": None, "source_file": source_file})  # fmt: skip
            yield pa.RecordBatch.from_pylist(rows, schema=arrow_schema)

    return parse


def parse_lines(lines: DataFrame, limits: Limits = DEFAULT_LIMITS) -> DataFrame:
    """Raw records (value as bytes or text, source_file) -> one row each: canonical columns, or a reason."""
    schema = parsed_schema()
    return lines.select("value", "source_file").mapInArrow(_parse_batches(schema, limits), schema)


def first_of_each_event(accepted: DataFrame) -> DataFrame:
    """Keep one row per event_id: the earliest received, ties broken by file and content (deterministic)."""
    order = Window.partitionBy("event_id").orderBy("received_at", "source_file", "occurred_at", "anonymous_id")
    return accepted.withColumn("_n", F.row_number().over(order)).filter("_n = 1").drop("_n")


def not_yet_in_bronze(candidates: DataFrame, bronze: DataFrame, since: datetime, this_batch: str) -> DataFrame:
    """Candidates whose event_id bronze does not already hold (within the dedup horizon).

    Rows written by this very batch (a replay after a crash) do not count as earlier copies, so the
    replay classifies every line exactly as the first attempt did.
    """
    earlier = bronze.filter((F.col("occurred_at") >= F.lit(since)) & (F.col("event_date") >= F.lit(since.date())))
    earlier = earlier.filter(F.col("ingest_batch") != F.lit(this_batch)).select("event_id")
    return candidates.join(earlier, "event_id", "left_anti")


def to_bronze_rows(events: DataFrame, ingested_at: datetime, ingest_batch: str) -> DataFrame:
    """Add lineage columns and order columns as the contract does."""
    columns = table_contract("bronze.events").column_names
    return (
        events.withColumn("event_date", F.to_date("occurred_at"))
        .withColumn("ingested_at", F.lit(ingested_at))
        .withColumn("ingest_batch", F.lit(ingest_batch))
        .select(*columns)
    )


def to_quarantine_rows(rejected: DataFrame, quarantined_at: datetime, ingest_batch: str) -> DataFrame:
    columns = table_contract("bronze.quarantine").column_names
    return (
        rejected.withColumn("quarantined_at", F.lit(quarantined_at))
        .withColumn("quarantine_date", F.lit(quarantined_at.date()))
        .withColumn("ingest_batch", F.lit(ingest_batch))
        .select(*columns)
    )


def process_bronze_batch(
    spark: SparkSession, settings: Settings, lines: DataFrame, batch_id: int, query_id: str
) -> BatchRecord:
    """Parse, validate, deduplicate and write one micro-batch of raw lines; return its counts."""
    record = BatchRecord(JOB, query_id, batch_id)
    ingest_batch = f"{query_id}/{batch_id}"
    parsed = parse_lines(lines, Limits.from_settings(settings)).persist()
    try:
        with record.phase("parse"):
            summary = (
                parsed.groupBy("is_accepted", "reason")
                .agg(F.count(F.lit(1)).alias("n"), F.min(F.unix_micros("occurred_at")).alias("min_occurred_us"))
                .collect()
            )
        record.input_rows = sum(r.n for r in summary)
        accepted_in = sum(r.n for r in summary if r.is_accepted)
        record.quarantine_reasons = {r.reason: r.n for r in summary if not r.is_accepted}
        record.quarantined_rows = sum(record.quarantine_reasons.values())
        if accepted_in:
            min_occurred_s = min(r.min_occurred_us for r in summary if r.is_accepted) / 1e6
            since = datetime.fromtimestamp(min_occurred_s - interval_seconds(settings.dedup_window), UTC)
            bronze = spark.read.format("delta").load(str(settings.table_path("bronze.events")))
            fresh = not_yet_in_bronze(first_of_each_event(parsed.filter("is_accepted")), bronze, since, ingest_batch)
            rows = to_bronze_rows(fresh, record.started_at, ingest_batch).persist()
            with record.phase("dedup"):
                record.accepted_rows = rows.count()
            with record.phase("write_events"):
                idempotent_append(rows, settings.table_path("bronze.events"), f"{JOB}-{query_id}", batch_id)
            rows.unpersist()
        record.duplicate_rows = accepted_in - record.accepted_rows
        if record.quarantined_rows:
            rejected = to_quarantine_rows(parsed.filter("NOT is_accepted"), record.started_at, ingest_batch)
            with record.phase("write_quarantine"):
                idempotent_append(rejected, settings.table_path("bronze.quarantine"), f"{JOB}-{query_id}", batch_id)
        record.write(spark, settings)
        return record
    finally:
        parsed.unpersist()


def landing_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """The landing zone as a stream of raw lines with the file each came from."""
    return (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .option("pathGlobFilter", "*.ndjson")
        .load(str(settings.landing))
        # bytes, not text: the parser decides what is valid UTF-8 and quarantines the rest
        .select(F.col("value").cast("binary").alias("value"), F.col("_metadata.file_path").alias("source_file"))
    )


SOURCES = ("files", "kafka")


def run(
    spark: SparkSession,
    settings: Settings,
    trigger: str | None = None,
    wait: bool = True,
    source: str = "files",
) -> StreamingQuery:
    """Start the bronze stream from the landing zone (files) or a Kafka topic; availableNow by default.

    Each source has its own checkpoint (bronze, bronze-kafka), so switching sources never confuses offsets.
    """
    if source not in SOURCES:
        raise ValueError(f"bronze source {source!r}: use one of {SOURCES}")
    ensure_tables(spark, settings)
    if source == "files":
        settings.landing.mkdir(parents=True, exist_ok=True)
        lines, name = landing_stream(spark, settings), JOB
    else:
        from spark_jobs.kafka import kafka_lines

        lines, name = kafka_lines(spark, settings), f"{JOB}-kafka"

    def process(batch: DataFrame, batch_id: int, query_id: str) -> None:
        process_bronze_batch(spark, settings, batch, batch_id, query_id)

    return run_stream(lines, name, settings, process, trigger or settings.trigger, wait)
