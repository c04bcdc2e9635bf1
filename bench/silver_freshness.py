"""Silver at a steady rate: how long an event takes from landing to being visible in its session in
silver.sessions, and what silver keeps as the run goes on.

    .venv/bin/python bench/silver_freshness.py [--events 12000] [--files 40] [--interval 10]

A simulated day is written to a staging folder in `files` NDJSON files (in arrival order), then one file
is moved into the landing zone every `interval` seconds while bronze and silver run as they do in
production: two streams in one Spark application, each with a processing-time trigger of `trigger`.

Freshness of an event = the commit time of the first silver.sessions version whose session of that
device covers the event's time, minus the moment its file landed (read back from the Delta history after
the run, so measuring adds no load while it runs). It is split into landing -> bronze (the bronze
batch's start, `ingested_at`) and bronze -> silver. Late events (silver.late_events) are left out: they
are recorded, never shown in a session. The first `--skip` files are left out too (JIT, Python workers).

The baseline is the floor under the same load: the bronze stream alone (landing -> bronze), which every
design has to pay before silver can see an event; the ratio is silver's p50 over bronze's.

State over the run: after each silver commit, the sessions still open (what every next batch may
recompute), all sessions, and the table's size on disk; the stream checkpoint at the end (offsets only:
no Spark state store).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchlib import dir_size, job_runs, percentile  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.bronze import job as bronze
from spark_jobs.contracts import ensure_tables
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from spark_jobs.spark import build_spark


def _feed(staged: list[Path], landing: Path, interval: float, landed: dict[str, float]) -> None:
    """Move one staged file into the landing zone every `interval` seconds (a rename: never half-read)."""
    start = time.time()
    for i, path in enumerate(staged):
        time.sleep(max(0.0, start + i * interval - time.time()))
        landed[path.name] = time.time()
        path.rename(landing / path.name)


def _wait_for(done, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done after {timeout:.0f}s")
        time.sleep(2)


def bench(spark: SparkSession, base: Settings, events: int, files: int, interval: float, trigger: str, skip: int):
    settings = replace(base.with_root(base.lakehouse / "run"), trigger=trigger)
    staging = base.lakehouse / "staging"
    summary = simulate(staging, base.lakehouse / "truth", events=events, seed=29, lines_per_file=-(-events // files))
    staged = sorted(staging.glob("events-*.ndjson"))
    ensure_tables(spark, settings)
    settings.landing.mkdir(parents=True, exist_ok=True)
    landed: dict[str, float] = {}

    bronze_query = bronze.run(spark, settings, trigger=trigger, wait=False)
    silver_query = silver.run(spark, settings, trigger=trigger, wait=False)
    feeder = threading.Thread(target=_feed, args=(staged, settings.landing, interval, landed), daemon=True)
    t0 = time.monotonic()
    feeder.start()
    feeder.join()
    events_table = str(settings.table_path("bronze.events"))

    def bronze_done() -> bool:
        runs = job_runs(spark, settings, "bronze")
        return sum(r.input_rows for r in runs) >= summary.lines

    def silver_done() -> bool:
        return (
            sum(r.input_rows for r in job_runs(spark, settings, "silver"))
            >= spark.read.format("delta").load(events_table).count()
        )

    _wait_for(bronze_done, 900, "bronze")
    _wait_for(silver_done, 900, "silver")
    seconds = time.monotonic() - t0
    for query in (bronze_query, silver_query):
        query.stop()
    if bronze_query.exception() or silver_query.exception():
        raise RuntimeError(f"a stream failed: {bronze_query.exception() or silver_query.exception()}")

    bronze_events = spark.read.format("delta").load(events_table)
    landed_at = spark.createDataFrame(
        [(name, datetime.fromtimestamp(at, UTC)) for name, at in landed.items()], "file STRING, landed_at TIMESTAMP"
    )
    late = spark.read.format("delta").load(str(settings.table_path("silver.late_events")))
    measured = (
        bronze_events.withColumn("file", F.element_at(F.split("source_file", "/"), -1))
        .join(landed_at, "file")
        .join(late.select("anonymous_id", "event_id"), ["anonymous_id", "event_id"], "left_anti")
        .select("anonymous_id", "event_id", "occurred_at", "ingested_at", "landed_at", "file")
    )
    sessions_path = str(settings.table_path("silver.sessions"))
    history = DeltaTable.forPath(spark, sessions_path).history().filter("operation = 'MERGE'")
    commits = [(r.version, r.timestamp) for r in history.select("version", "timestamp").orderBy("version").collect()]
    versions = None
    state_rows = []
    for version, committed in commits:
        snapshot = spark.read.format("delta").option("versionAsOf", version).load(sessions_path)
        size = sum(os.path.getsize(f.removeprefix("file:")) for f in snapshot.inputFiles())
        counts = snapshot.agg(F.count(F.lit(1)).alias("all"), F.count_if(~F.col("is_closed")).alias("open")).first()
        state_rows.append((version, counts.all, counts.open, size))
        part = snapshot.select("anonymous_id", "session_start", "session_end", F.lit(committed).alias("visible_at"))
        versions = part if versions is None else versions.unionByName(part)
    visible = (
        measured.join(versions, "anonymous_id")
        .filter(F.col("occurred_at").between(F.col("session_start"), F.col("session_end")))
        .filter(F.col("visible_at") >= F.col("landed_at"))  # an older session may already span the time
        .groupBy("anonymous_id", "event_id", "ingested_at", "landed_at", "file")
        .agg(F.min("visible_at").alias("visible_at"))
    )
    skipped = sorted(landed)[:skip]
    rows = visible.filter(~F.col("file").isin(*skipped)).collect()
    to_bronze = [(r.ingested_at - r.landed_at).total_seconds() for r in rows]
    to_silver = [(r.visible_at - r.landed_at).total_seconds() for r in rows]
    bronze_to_silver = [(r.visible_at - r.ingested_at).total_seconds() for r in rows]
    total = measured.count()
    runs = job_runs(spark, settings, "silver")
    durations = [r.duration_ms / 1000 for r in runs]

    rate = summary.lines / (len(staged) * interval)
    print(f"\nfeed: {summary.lines:,} lines in {len(staged)} files, one every {interval:.0f}s (~{rate:,.0f} events/s), "
          f"trigger {trigger!r}; bronze and silver caught up {seconds - len(staged) * interval:.0f}s after the "
          f"last file")  # fmt: skip
    print(f"  silver batches: {len(runs)}, {sum(r.input_rows for r in runs):,} events; batch p50 "
          f"{statistics.median(durations):.1f}s, p95 {percentile(durations, 0.95):.1f}s, "
          f"max {max(durations):.1f}s")  # fmt: skip
    print(f"  freshness over {len(rows):,} of {total:,} on-time events (first {skip} files left out):")
    print(f"    landing -> silver.sessions (intentlake)  p50 {statistics.median(to_silver):6.1f}s  "
          f"p95 {percentile(to_silver, 0.95):6.1f}s  max {max(to_silver):6.1f}s")  # fmt: skip
    print(f"    landing -> bronze.events (baseline)      p50 {statistics.median(to_bronze):6.1f}s  "
          f"p95 {percentile(to_bronze, 0.95):6.1f}s  max {max(to_bronze):6.1f}s")  # fmt: skip
    print(f"    of which bronze -> silver                p50 {statistics.median(bronze_to_silver):6.1f}s  "
          f"p95 {percentile(bronze_to_silver, 0.95):6.1f}s")  # fmt: skip
    print(f"    ratio: landing->silver p50 is {statistics.median(to_silver) / statistics.median(to_bronze):.1f}x "
          f"landing->bronze p50")  # fmt: skip
    step = max(1, len(state_rows) // 8)
    print("  state over the run (silver.sessions after a silver commit):")
    shown = state_rows[::step] + ([] if (len(state_rows) - 1) % step == 0 else state_rows[-1:])
    for version, total_sessions, open_sessions, size in shown:
        print(f"    version {version:>4}: {open_sessions:>5,} open of {total_sessions:>6,} sessions, "
              f"{size / 1024:8,.0f} KiB")  # fmt: skip
    checkpoint = dir_size(settings.checkpoint("silver"))
    print(f"  silver stream checkpoint: {checkpoint[0] / 1024:,.0f} KiB in {checkpoint[1]} files "
          f"(offsets, no state store)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=12_000, help="events to simulate")
    parser.add_argument("--files", type=int, default=40, help="files the events arrive in")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between two files")
    parser.add_argument("--trigger", default="5 seconds", help="processing-time trigger of both streams")
    parser.add_argument("--skip", type=int, default=3, help="first files left out of the freshness figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-") as tmp:
        base = Settings.from_env().with_root(Path(tmp))
        spark = build_spark(base, app_name="intentlake-bench")
        print(f"silver freshness on {os.cpu_count()} cores ({base.spark_master})")
        bench(spark, base, args.events, args.files, args.interval, args.trigger, args.skip)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
