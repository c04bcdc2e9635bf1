"""Silver: incremental micro-batches against a full recompute, batch latency (how fresh an open session
is) and what the layer keeps between batches.

    .venv/bin/python bench/silver_stream.py [--events 20000] [--files 10]

Bronze is filled first (simulated events, `files` landing files, one bronze commit each). Then silver runs
over it one bronze data file per micro-batch, as a stream with a short trigger would see it; every batch
does the production work: late events, the bounded recompute of open sessions, identity resolution, the
sessions quality gate, the sessions and micro-moments MERGEs, re-attribution and the run record.

The baseline is the least a sessions layer could do: after the last batch, recompute every session of
every device from all of bronze in one pass (the same sessionizer and session features, no identity, no
gate) and overwrite a Delta table. Two ratios come out: the whole incremental catch-up against one full
recompute, and one steady micro-batch against the full recompute it avoids (the cost a recompute-
everything design would pay on every trigger).

Freshness: an event committed to bronze shows in silver.sessions (its open session grown) after the
wait for the next trigger plus one silver batch; the batch durations are printed as p50/p95/max.
State: silver keeps no Spark state store (sessions live in the Delta table; the stream checkpoint holds
offsets only); its size after the run is printed beside the tables'.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from benchlib import (
    dir_size,
    job_runs,
    percentile,
    phase_seconds,
)  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.bronze import job as bronze
from spark_jobs.contracts import ensure_tables
from spark_jobs.privacy import hash_key
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.silver.sessions import build_sessions, sessionize
from spark_jobs.simulate import simulate
from spark_jobs.spark import build_spark


def full_recompute(spark: SparkSession, settings: Settings, target: Path) -> tuple[float, int]:
    """The baseline: every session from all of bronze in one pass, overwritten into a Delta table."""
    config = silver.SilverConfig.load(settings)
    t0 = time.monotonic()
    events = spark.read.format("delta").load(str(settings.table_path("bronze.events")))
    newest = events.agg(F.max("occurred_at")).first()[0]
    watermark_us = int((newest.timestamp() - config.allowed_lateness_seconds) * 1_000_000)
    sessions = build_sessions(sessionize(events, config.rules), config.rules, watermark_us, key=hash_key(settings))
    sessions.write.format("delta").mode("overwrite").save(str(target))
    seconds = time.monotonic() - t0
    return seconds, spark.read.format("delta").load(str(target)).count()


def bench(spark: SparkSession, base: Settings, events: int, files: int) -> None:
    settings = replace(base.with_root(base.lakehouse / "run"), max_files_per_trigger=1, silver_max_files_per_trigger=1)
    summary = simulate(settings.landing, settings.truth, events=events, seed=17, lines_per_file=-(-events // files))
    ensure_tables(spark, settings)
    bronze.run(spark, settings)
    bronze_rows = spark.read.format("delta").load(str(settings.table_path("bronze.events"))).count()

    t0 = time.monotonic()
    silver.run(spark, settings)
    seconds = time.monotonic() - t0
    runs = job_runs(spark, settings, "silver")
    assert sum(r.input_rows for r in runs) == bronze_rows, "silver did not read every bronze row"
    durations = sorted(r.duration_ms / 1000 for r in runs)
    steady = [r.duration_ms / 1000 for r in runs[1:]] or durations
    sessions = spark.read.format("delta").load(str(settings.table_path("silver.sessions")))
    open_sessions = sessions.filter(~F.col("is_closed")).count()

    base_seconds, base_sessions = full_recompute(spark, settings, base.lakehouse / "baseline-sessions")
    print(f"\ninput: {summary.lines:,} simulated lines -> {bronze_rows:,} bronze events in {len(runs)} silver "
          f"micro-batches (one bronze data file each)")  # fmt: skip
    print(f"  intentlake silver (incremental)   {bronze_rows:>9,} events in {seconds:6.1f}s = "
          f"{bronze_rows / seconds:8,.0f} events/s; {sessions.count():,} sessions ({open_sessions} open)")  # fmt: skip
    print(f"  baseline (full recompute, 1 pass) {bronze_rows:>9,} events in {base_seconds:6.1f}s = "
          f"{bronze_rows / base_seconds:8,.0f} events/s; {base_sessions:,} sessions")  # fmt: skip
    print(f"  ratio: the incremental catch-up takes {seconds / base_seconds:.2f}x one full recompute; "
          f"a steady micro-batch (median {statistics.median(steady):.1f}s) takes "
          f"{statistics.median(steady) / base_seconds:.2f}x the full recompute it replaces")  # fmt: skip
    p95 = percentile(durations, 0.95)
    print(f"  freshness: an event is in silver.sessions one trigger wait + one batch after its bronze commit; "
          f"batch p50 {statistics.median(durations):.1f}s, p95 {p95:.1f}s, max {durations[-1]:.1f}s")  # fmt: skip
    spent = ", ".join(f"{name} {spent_s:.1f}s" for name, spent_s in phase_seconds(runs))
    print(f"  where silver's time went: {spent}")
    recomputed = [int(r.details.get("recomputed_events", 0)) for r in runs[1:]]
    if recomputed:
        print(f"  events recomputed per batch after the first: median {statistics.median(recomputed):,.0f}, "
              f"max {max(recomputed):,} (bronze grows to {bronze_rows:,})")  # fmt: skip
    checkpoint = dir_size(settings.checkpoint("silver"))
    print(f"  state between batches: no Spark state store; stream checkpoint {checkpoint[0] / 1024:,.0f} KiB "
          f"in {checkpoint[1]} files")  # fmt: skip
    for name in ("silver.sessions", "silver.micro_moments", "silver.identity_edges", "silver.identity_map"):
        size, count = dir_size(settings.table_path(name))
        rows = spark.read.format("delta").load(str(settings.table_path(name))).count()
        print(f"  {name:<24} {rows:>8,} rows, {size / 1024:8,.0f} KiB in {count} files")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events to simulate")
    parser.add_argument("--files", type=int, default=10, help="landing files (one bronze commit each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-") as tmp:
        base = Settings.from_env().with_root(Path(tmp))
        spark = build_spark(base, app_name="intentlake-bench")
        print(f"silver stream on {os.cpu_count()} cores ({base.spark_master})")
        warm = replace(base.with_root(base.lakehouse / "warm-up"), silver_max_files_per_trigger=1)
        simulate(warm.landing, warm.truth, events=1_000, seed=1, lines_per_file=500)  # JIT, workers: not measured
        bronze.run(spark, warm)
        silver.run(spark, warm)
        full_recompute(spark, warm, warm.lakehouse / "baseline")
        bench(spark, base, args.events, args.files)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
