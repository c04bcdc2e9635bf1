"""Bronze: landing-zone NDJSON or a Kafka topic -> bronze.events (canonical, deduplicated) + bronze.quarantine.

Every input record ends in exactly one place: bronze.events, bronze.quarantine (with a reason), or the
batch's duplicate count; ops.pipeline_runs records the counts per micro-batch. Writes are idempotent
(Delta txnAppId/txnVersion per micro-batch), so a job killed at any point and restarted on its
checkpoint writes each row once.

Dedup and lateness share one watermark: the newest accepted event time minus INTENTLAKE_DEDUP_WINDOW.
Events older than it are quarantined as too_late_for_watermark (never dropped silently), so dedup only
ever needs to look back one window into bronze.events: no state grows with the length of the run.
The watermark a batch uses comes from the previous batch's ops.pipeline_runs row, so a replayed batch
classifies every record exactly as its first attempt did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from spark_jobs.bronze.normalize import (
    BUNDLED_SCHEMAS,
    DEFAULT_LIMITS,
    Limits,
    Reason,
    RejectedEvent,
    SchemaRegistry,
    decode_record,
    normalize_records,
)
from spark_jobs.bronze.vocabulary import BUNDLED_VOCABULARY, Vocabulary, vocabulary_at
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.erasure import drop_erased, suppression_list
from spark_jobs.kafka import kafka_lines
from spark_jobs.privacy import hash_key
from spark_jobs.quality import MAX_KEYS_REPORTED, QualityGate, QualityGateHalted
from spark_jobs.settings import Settings, interval_seconds, setting_default
from spark_jobs.streaming import CHECKPOINT_MARKER, BatchRecord, idempotent_append, run_stream

JOB = "bronze"
LINEAGE_COLUMNS = ("event_date", "ingested_at", "source_file", "ingest_batch")
_TIMESTAMP_FIELDS = ("occurred_at", "received_at")
_VERDICT_COLUMNS = ("is_accepted", "reason", "detail", "raw", "source_file")


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


def _parse_batches(schema: StructType, limits: Limits, registry: SchemaRegistry, vocabulary: Vocabulary):
    arrow_schema = to_arrow_schema(schema)
    canonical_names = [f.name for f in schema.fields if f.name not in _VERDICT_COLUMNS]
    empty = dict.fromkeys(canonical_names)

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            records = batch.column("value").to_pylist()
            files = batch.column("source_file").to_pylist()
            rows = []
            for record, source_file in zip(records, files, strict=True):
                try:
                    outcomes = normalize_records(decode_record(record), limits, registry, vocabulary)
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


def parse_lines(
    lines: DataFrame,
    limits: Limits = DEFAULT_LIMITS,
    registry: SchemaRegistry = BUNDLED_SCHEMAS,
    vocabulary: Vocabulary = BUNDLED_VOCABULARY,
) -> DataFrame:
    """Raw records (value as bytes or text, source_file) -> one row each: canonical columns, or a reason."""
    schema = parsed_schema()
    return lines.select("value", "source_file").mapInArrow(_parse_batches(schema, limits, registry, vocabulary), schema)


DEFAULT_KEYS = tuple(str(setting_default("dedup_keys")).split(","))


def first_of_each_event(accepted: DataFrame, keys: tuple[str, ...] = DEFAULT_KEYS) -> DataFrame:
    """Keep one row per dedup key: the earliest received, ties broken by file and content (deterministic).

    A null session_id is a value of its own: records without a session id are keyed by event_id alone.
    """
    order = Window.partitionBy(*keys).orderBy("received_at", "source_file", "occurred_at", "anonymous_id")
    return accepted.withColumn("_n", F.row_number().over(order)).filter("_n = 1").drop("_n")


def not_yet_in_bronze(
    candidates: DataFrame,
    bronze: DataFrame,
    since: datetime | None,
    this_batch: str,
    keys: tuple[str, ...] = DEFAULT_KEYS,
) -> DataFrame:
    """Candidates whose dedup key bronze does not already hold (from `since` on; None: all of bronze).

    Rows written by this very batch (a replay after a crash) do not count as earlier copies, so the
    replay classifies every line exactly as the first attempt did.
    """
    earlier = bronze
    if since is not None:
        earlier = earlier.filter((F.col("occurred_at") >= F.lit(since)) & (F.col("event_date") >= F.lit(since.date())))
    earlier = earlier.filter(F.col("ingest_batch") != F.lit(this_batch))
    earlier = earlier.select(*(F.col(k).alias(f"_earlier_{k}") for k in keys))
    match = [candidates[k].eqNullSafe(earlier[f"_earlier_{k}"]) for k in keys]
    return candidates.join(earlier, match, "left_anti")


class DedupKeysChanged(RuntimeError):
    """The dedup keys in settings differ from the ones an existing checkpoint was built with."""


def check_dedup_keys(checkpoint: Path, keys: tuple[str, ...]) -> None:
    """Refuse to resume a checkpoint with other dedup keys than it was built with; record them on a new one.

    Checkpoints made before the keys were configurable deduplicated by event_id alone.
    """
    marker = checkpoint / CHECKPOINT_MARKER
    recorded_json = json.loads(marker.read_text()) if marker.exists() else {}
    if "dedup_keys" in recorded_json:
        recorded = tuple(recorded_json["dedup_keys"])
    elif (checkpoint / "offsets").is_dir() and any((checkpoint / "offsets").iterdir()):
        recorded = ("event_id",)
    else:
        checkpoint.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({**recorded_json, "dedup_keys": list(keys)}) + "\n")
        return
    if recorded != keys:
        raise DedupKeysChanged(
            f"checkpoint {checkpoint} deduplicates by ({', '.join(recorded)}) but INTENTLAKE_DEDUP_KEYS is now "
            f"{','.join(keys)!r}. Resuming would judge duplicates inconsistently across the change. Either set "
            f"INTENTLAKE_DEDUP_KEYS={','.join(recorded)} again, or move the checkpoint aside to start a new one "
            f"(bronze then re-reads the source: events it already holds count as duplicates, and events older "
            f"than the watermark go to quarantine as too_late_for_watermark)."
        )


class Watermark:
    """The bronze watermark of one streaming query: newest accepted event time so far, minus the window.

    The value a batch starts from is the previous batch's max_event_time in ops.pipeline_runs (read once
    after a start, then carried in memory); a new query starts from the newest event bronze already holds.
    """

    def __init__(self, spark: SparkSession, settings: Settings, job: str, query_id: str) -> None:
        self.spark, self.settings, self.job, self.query_id = spark, settings, job, query_id
        self.window = timedelta(seconds=interval_seconds(settings.dedup_window))
        self._known: tuple[int, datetime | None] | None = None  # (batch_id, max_event_time after it)

    def max_event_time_before(self, batch_id: int, this_batch: str) -> datetime | None:
        if self._known is not None and self._known[0] == batch_id - 1:
            return self._known[1]
        previous = (
            read_table(self.spark, self.settings, "ops.pipeline_runs")
            .filter((F.col("job") == self.job) & (F.col("query_id") == self.query_id) & (F.col("batch_id") < batch_id))
            .orderBy(F.col("batch_id").desc())
            .select("max_event_time")
            .first()
        )
        if previous is not None:
            return previous.max_event_time
        bronze = read_table(self.spark, self.settings, "bronze.events")
        return bronze.filter(F.col("ingest_batch") != F.lit(this_batch)).agg(F.max("occurred_at")).first()[0]

    def advance(self, batch_id: int, max_event_time: datetime | None) -> None:
        self._known = (batch_id, max_event_time)


def source_offsets(parsed: DataFrame, source: str, landing: Path) -> dict[str, str]:
    """What a batch read: Kafka topic/partition -> 'first..last' offset, or landing file -> record count."""
    if source == "kafka":
        position = F.regexp_extract("source_file", r"^(.+)/(\d+)$", 2).cast("long")
        rows = (
            parsed.groupBy(F.regexp_extract("source_file", r"^(.+)/(\d+)$", 1).alias("part"))
            .agg(F.min(position).alias("lo"), F.max(position).alias("hi"))
            .collect()
        )
        return {r.part: f"{r.lo}..{r.hi}" for r in rows}
    rows = parsed.groupBy("source_file").count().collect()
    prefix = f"file:{landing}/"
    return {str(r.source_file).removeprefix(prefix): f"{r['count']} records" for r in rows}


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
        .withColumn("replayed_at", F.lit(None).cast("timestamp"))
        .withColumn("replay_outcome", F.lit(None).cast("string"))
        .select(*columns)
    )


def quality_rejects(spark: SparkSession, rows: DataFrame, failures: dict[str, list[str]]) -> DataFrame:
    """The rows whose key failed an expectation, as quarantine input: canonical JSON as raw, the checks as detail."""
    failed: dict[str, list[str]] = {}
    for expectation, ids in failures.items():
        for event_id in ids:
            failed.setdefault(event_id, []).append(expectation)
    details = spark.createDataFrame(
        [(event_id, "failed " + ", ".join(sorted(names))) for event_id, names in failed.items()],
        "event_id STRING, detail STRING",
    )
    return (
        rows.join(F.broadcast(details), "event_id")
        .select(
            canonical_json().alias("raw"),
            F.lit(Reason.QUALITY.value).alias("reason"),
            "detail",
            "event_id",
            "source_file",
        )
        .persist()
    )


def canonical_json() -> Column:
    """A bronze row as a canonical event JSON (the raw payload kept when a quality check rejects it).

    The canonical adapter reads it back, so `intentlake replay-quarantine` can re-ingest it after a fix.
    """
    names = [f.name for f in parsed_schema().fields if f.name not in _VERDICT_COLUMNS]
    times = {n: F.date_format(n, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX").alias(n) for n in _TIMESTAMP_FIELDS}
    return F.to_json(F.struct(*(times.get(n, F.col(n)) for n in names)))


def process_bronze_batch(
    spark: SparkSession,
    settings: Settings,
    lines: DataFrame,
    batch_id: int,
    query_id: str,
    *,
    job: str = JOB,
    source: str = "files",
    watermark: Watermark | None = None,
    gate: QualityGate | None = None,
) -> BatchRecord:
    """Parse, validate, deduplicate, check and write one micro-batch of raw records; return its counts."""
    record = BatchRecord(job, query_id, batch_id)
    ingest_batch = f"{query_id}/{batch_id}"
    keys = settings.dedup_key_columns
    watermark = watermark or Watermark(spark, settings, job, query_id)
    previous_max = watermark.max_event_time_before(batch_id, ingest_batch)
    if previous_max is not None:
        record.watermark = previous_max - watermark.window
    limits = Limits.from_settings(settings)
    if record.watermark is not None:
        limits = replace(limits, watermark_us=int(record.watermark.timestamp() * 1_000_000))
    registry = SchemaRegistry.load(settings.schema_dir)  # every batch: new versions need no restart
    vocabulary = vocabulary_at(settings.event_vocabulary_file)  # ... and a changed mapping applies next batch
    parsed = parse_lines(lines, limits, registry, vocabulary).persist()
    fresh_rows = failed_quality = erased_rows = None
    try:
        with record.phase("parse"):
            summary = (
                parsed.groupBy("is_accepted", "reason")
                .agg(
                    F.count(F.lit(1)).alias("n"),
                    F.min("occurred_at").alias("min_occurred"),
                    F.max("occurred_at").alias("max_occurred"),
                )
                .collect()
            )
            record.source_offsets = source_offsets(parsed, source, settings.landing)
        record.input_rows = sum(r.n for r in summary)
        accepted_in = sum(r.n for r in summary if r.is_accepted)
        reasons = {r.reason: r.n for r in summary if not r.is_accepted}
        record.late_rows = reasons.get(Reason.TOO_LATE.value, 0)
        newest = max((r.max_occurred for r in summary if r.is_accepted), default=None)
        record.max_event_time = max(filter(None, (previous_max, newest)), default=None)
        if accepted_in:
            earliest = min(r.min_occurred for r in summary if r.is_accepted)
            since = earliest - watermark.window
            bronze = read_table(spark, settings, "bronze.events")
            fresh = not_yet_in_bronze(first_of_each_event(parsed.filter("is_accepted"), keys), bronze, since,
                                      ingest_batch, keys)  # fmt: skip
            fresh_rows = rows = to_bronze_rows(fresh, record.started_at, ingest_batch).persist()
            with record.phase("dedup"):
                fresh_count = rows.count()
            record.duplicate_rows = accepted_in - fresh_count
            suppressed = suppression_list(spark, settings) if fresh_count else None
            if suppressed is not None:
                # an erased person's events that reach bronze only now (a Kafka topic behind, a file that landed
                # late) but were received before the erasure stay erased; counted, so the batch still adds up
                with record.phase("erased"):
                    key = hash_key(settings)
                    erased_rows = drop_erased(rows, suppressed, key, ("anonymous_id", "user_id"), "received_at")
                    erased_rows = erased_rows.persist()
                    kept = erased_rows.count()
                record.details["erased_rows"] = str(fresh_count - kept)
                rows, fresh_count = erased_rows, kept
            if gate is not None and fresh_count:
                with record.phase("quality"):
                    failures = gate.failures(rows)
                record.quality_status = "passed"
                if failures:
                    record.quality_failures = {name: sorted(ids)[:MAX_KEYS_REPORTED] for name, ids in failures.items()}
                    if settings.quality_policy == "halt":
                        record.quality_status = "halted"
                        record.write(spark, settings, app_suffix="halt")
                        raise QualityGateHalted(job, batch_id, failures)
                    record.quality_status = "failed"
                    failed_quality = quality_rejects(spark, rows, failures)
                    rows = rows.join(failed_quality.select("event_id"), "event_id", "left_anti")
            record.accepted_rows = fresh_count - (failed_quality.count() if failed_quality is not None else 0)
            with record.phase("write_events"):
                idempotent_append(rows, settings.table_path("bronze.events"), f"{JOB}-{query_id}", batch_id)
        if failed_quality is not None:
            reasons[Reason.QUALITY.value] = fresh_count - record.accepted_rows
        record.quarantine_reasons = reasons
        record.quarantined_rows = sum(reasons.values())
        if record.quarantined_rows:
            rejected = parsed.filter("NOT is_accepted").select("raw", "reason", "detail", "event_id", "source_file")
            if failed_quality is not None:
                rejected = rejected.unionByName(failed_quality.select(*rejected.columns))
            rejected = to_quarantine_rows(rejected, record.started_at, ingest_batch)
            with record.phase("write_quarantine"):
                idempotent_append(rejected, settings.table_path("bronze.quarantine"), f"{JOB}-{query_id}", batch_id)
        record.write(spark, settings)
        watermark.advance(batch_id, record.max_event_time)
        return record
    finally:
        for cached in (erased_rows, fresh_rows, failed_quality, parsed):
            if cached is not None:
                cached.unpersist()


def landing_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """The landing zone as a stream of raw lines with the file each came from (gzip files decompressed).

    Reads the files named as `landing.LANDING_SUFFIXES` says, and logs every other file there once.
    """
    from spark_jobs.bronze.landing import LANDING_GLOB, warn_unread_files

    warn_unread_files(settings.landing)
    return (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", settings.max_files_per_trigger)
        .option("pathGlobFilter", LANDING_GLOB)
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
        lines, name = kafka_lines(spark, settings), f"{JOB}-kafka"

    check_dedup_keys(settings.checkpoint(name), settings.dedup_key_columns)
    gate = QualityGate.for_table("bronze.events", settings.expectations_dir)
    watermarks: dict[str, Watermark] = {}

    def process(batch: DataFrame, batch_id: int, query_id: str) -> None:
        watermark = watermarks.setdefault(query_id, Watermark(spark, settings, name, query_id))
        process_bronze_batch(spark, settings, batch, batch_id, query_id, job=name, source=source,
                             watermark=watermark, gate=gate)  # fmt: skip

    # a landing zone inside the lakehouse is recorded relative to it, so the lakehouse can move as a whole
    landing = settings.landing
    if landing.is_relative_to(settings.lakehouse):
        landing = Path("<lakehouse>") / landing.relative_to(settings.lakehouse)
    source_setting = {"landing": str(landing)} if source == "files" else {"kafka_topic": settings.kafka_topic}
    pinned = {"dedup_window": settings.dedup_window, **source_setting}
    return run_stream(lines, name, settings, process, trigger or settings.trigger, wait, pinned)
