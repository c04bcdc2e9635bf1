"""Bronze throughput (landing files and Kafka) against a plain-Spark baseline, and state after a long run.

    .venv/bin/python bench/bronze_throughput.py [--events 200000] [--steady-batches 60] [--kafka]

Each part runs the same input twice in one Spark session: through intentlake's bronze (adapters, schema
validation, dedup by (session_id, event_id) against bronze, quarantine, quality gate, run records) and
through a baseline that does the least a bronze layer could: Spark's JSON reader with a fixed schema,
dropDuplicates on event_id, one Delta append. The ratio is the price of what the baseline skips.

The steady run feeds bronze small batches (like a stream with a short trigger) and prints what could
grow: the checkpoint, Spark state, the rows dedup looks back over, and batch time from first to last.
`--kafka` needs a broker (`make kafka-up`); the topic gets a fresh name per run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from benchlib import (
    dir_size,
    job_runs,
    phase_seconds,
)  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.bronze import job as bronze
from spark_jobs.contracts import ensure_tables
from spark_jobs.settings import Settings
from spark_jobs.simulate import simulate
from spark_jobs.spark import build_spark

# The baseline reads only what it keeps; Spark's JSON reader ignores the rest of each line.
BASELINE_SCHEMA = "messageId STRING, eid STRING, type STRING, event STRING, kind STRING, timestamp STRING, ts LONG"


def _baseline(spark: SparkSession, lines: DataFrame, target: Path) -> int:
    parsed = lines.select(F.from_json(F.col("value").cast("string"), BASELINE_SCHEMA).alias("e")).select("e.*")
    events = parsed.withColumn("event_id", F.coalesce("messageId", "eid")).filter("event_id IS NOT NULL")
    events.dropDuplicates(["event_id"]).write.format("delta").mode("append").save(str(target))
    return spark.read.format("delta").load(str(target)).count()


def _report(name: str, lines: int, seconds: float, base_seconds: float) -> None:
    print(f"  {name:<36} {lines:>9,} records in {seconds:6.1f}s = {lines / seconds:8,.0f} records/s")
    print(f"  {'baseline (from_json+dropDuplicates)':<36} {lines:>9,} records in {base_seconds:6.1f}s = "
          f"{lines / base_seconds:8,.0f} records/s")  # fmt: skip
    print(f"  ratio: intentlake takes {seconds / base_seconds:.2f}x the baseline's time")


def bench_files(spark: SparkSession, base: Settings, events: int) -> Path:
    settings = base.with_root(base.lakehouse / "files")
    summary = simulate(settings.landing, settings.truth, events=events, seed=11)
    ensure_tables(spark, settings)
    t0 = time.monotonic()
    bronze.run(spark, settings)
    seconds = time.monotonic() - t0
    runs = job_runs(spark, settings, "bronze")
    assert sum(r.input_rows for r in runs) == summary.lines, "bronze did not read every line"
    t0 = time.monotonic()
    _baseline(spark, spark.read.text(str(settings.landing)), base.lakehouse / "baseline-files")
    base_seconds = time.monotonic() - t0
    print(f"\nlanding files: {summary.files} files, {summary.lines:,} lines, {len(runs)} micro-batches")
    _report("intentlake bronze (files)", summary.lines, seconds, base_seconds)
    spent = ", ".join(f"{name} {spent_s:.1f}s" for name, spent_s in phase_seconds(runs))
    print(f"  where bronze's time went: {spent}")
    return settings.landing


def bench_kafka(spark: SparkSession, base: Settings, landing: Path) -> None:
    from spark_jobs.kafka import publish_files

    settings = replace(base.with_root(base.lakehouse / "kafka"), kafka_topic=f"bench-{uuid.uuid4().hex[:8]}")
    published = publish_files(spark, settings, sorted(landing.glob("*.ndjson")))
    ensure_tables(spark, settings)
    t0 = time.monotonic()
    bronze.run(spark, settings, source="kafka")
    seconds = time.monotonic() - t0
    runs = job_runs(spark, settings, "bronze-kafka")
    assert sum(r.input_rows for r in runs) == published, "bronze did not read every record"
    lines = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.kafka_topic)
        .option("startingOffsets", "earliest")
        .load()
    )
    t0 = time.monotonic()
    _baseline(spark, lines, base.lakehouse / "baseline-kafka")
    base_seconds = time.monotonic() - t0
    print(f"\nkafka topic {settings.kafka_topic}: {published:,} records, {len(runs)} micro-batches")
    _report("intentlake bronze (kafka)", published, seconds, base_seconds)


def bench_steady(spark: SparkSession, base: Settings, batches: int) -> None:
    settings = replace(base.with_root(base.lakehouse / "steady"), max_files_per_trigger=1, dedup_window="1 hour")
    lines_per_batch = 1_000
    summary = simulate(settings.landing, settings.truth, events=batches * lines_per_batch, seed=13,
                       lines_per_file=lines_per_batch)  # fmt: skip
    ensure_tables(spark, settings)
    t0 = time.monotonic()
    query = bronze.run(spark, settings, trigger="1 second", wait=False)
    sizes = {}
    try:
        while True:
            done = len(job_runs(spark, settings, "bronze")) if settings.table_path("ops.pipeline_runs").exists() else 0
            if done >= 10 and 10 not in sizes:
                sizes[10] = dir_size(settings.checkpoint("bronze"))
            if done >= summary.files:
                break
            if query.exception():
                raise query.exception()
            time.sleep(2)
        state_ops = query.lastProgress.get("stateOperators", [])
    finally:
        query.stop()
    seconds = time.monotonic() - t0
    runs = job_runs(spark, settings, "bronze")
    end_size = dir_size(settings.checkpoint("bronze"))
    events = spark.read.format("delta").load(str(settings.table_path("bronze.events")))
    newest = runs[-1].max_event_time
    horizon = events.filter(F.col("occurred_at") >= F.lit(runs[-1].watermark)).count()
    first, last = runs[:10], runs[-10:]

    def avg_ms(rows, key=None):
        values = [int(r.details[key]) if key else r.duration_ms for r in rows if not key or key in r.details]
        return sum(values) / max(1, len(values))

    print(f"\nsteady run: {len(runs)} micro-batches of ~{lines_per_batch:,} lines over {seconds:.0f}s "
          f"(dedup window 1 hour; {summary.lines / seconds:,.0f} lines/s)")  # fmt: skip
    print(f"  Spark state store: {len(state_ops)} stateful operators, "
          f"{sum(op.get('numRowsTotal', 0) for op in state_ops)} rows (dedup keeps none)")  # fmt: skip
    print(f"  checkpoint: {sizes[10][0] / 1024:,.0f} KiB in {sizes[10][1]} files after 10 batches, "
          f"{end_size[0] / 1024:,.0f} KiB in {end_size[1]} files after {len(runs)}")  # fmt: skip
    print(f"  dedup looks back over {horizon:,} of {events.count():,} bronze rows (newest event {newest}, "
          f"watermark {runs[-1].watermark})")  # fmt: skip
    print(f"  batch time: first 10 avg {avg_ms(first) / 1000:.1f}s, last 10 avg {avg_ms(last) / 1000:.1f}s; "
          f"dedup phase {avg_ms(first, 'dedup_ms'):.0f} ms -> {avg_ms(last, 'dedup_ms'):.0f} ms")  # fmt: skip
    late = sum(r.late_rows or 0 for r in runs)
    print(f"  late rows quarantined: {late:,}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events for the throughput runs")
    parser.add_argument("--steady-batches", type=int, default=60, help="batches in the steady run (0: skip)")
    parser.add_argument("--kafka", action="store_true", help="also measure the Kafka source (needs make kafka-up)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-") as tmp:
        base = Settings.from_env().with_root(Path(tmp))
        spark = build_spark(base, app_name="intentlake-bench")
        print(f"bronze throughput on {os.cpu_count()} cores ({base.spark_master})")
        warm = base.with_root(base.lakehouse / "warm-up")  # JIT, Python workers, the GX import: not measured
        simulate(warm.landing, warm.truth, events=3_000, seed=1)
        bronze.run(spark, warm)
        _baseline(spark, spark.read.text(str(warm.landing)), warm.lakehouse / "baseline")
        landing = bench_files(spark, base, args.events)
        if args.kafka:
            bench_kafka(spark, base, landing)
        if args.steady_batches:
            bench_steady(spark, base, args.steady_batches)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
