"""Freshness at a steady event rate: how long an event takes from landing to its session in silver and
its score in gold, with bronze, silver and gold streaming on a processing-time trigger.

    .venv/bin/python bench/freshness.py [--events 9000] [--files 30] [--interval 10] [--trigger "5 seconds"]

A simulated day is written to a staging folder in `files` NDJSON files (in arrival order); one file is
moved into the landing zone every `interval` seconds (a rename: never read half-written) while the three
layers run as three streams of one Spark application, each with a processing-time trigger of `trigger`.
Once the feed ends and every stream has caught up (each one idle after the one before it), the streams
stop and the times are read back from the tables, so measuring adds no load while the feed runs:

- landed: when the event's file was moved into the landing zone;
- bronze: the commit time of the bronze.events version holding the event's row (from the Delta log);
- silver: the first silver.sessions commit (its Change Data Feed) whose row for the event's device covers
  the event's time, written by a silver batch that started after that bronze commit (so the batch read it);
- gold: the first gold.session_scores commit (its Change Data Feed) whose row for that session covers the
  event's time, written by a gold batch that started after that silver commit.

Late events (silver.late_events: recorded, never shown in a session) are left out, and so are the first
`--skip` files (JVM warm-up, Python workers starting). The baseline is landing -> bronze, the floor every
design pays before silver can see an event; the ratios are silver's and gold's p50 over it.

Prints the figures and, as its last line, one JSON object (bench/pipeline.py reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from benchlib import job_runs, percentile  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from spark_jobs.bronze import job as bronze
from spark_jobs.contracts import ensure_tables
from spark_jobs.gold import scoring as gold
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from spark_jobs.spark import build_spark

CATCH_UP_TIMEOUT_S = 1800


def _feed(staged: list[Path], landing: Path, interval: float, landed: dict[str, float]) -> None:
    """Move one staged file into the landing zone every `interval` seconds."""
    start = time.time()
    for i, path in enumerate(staged):
        time.sleep(max(0.0, start + i * interval - time.time()))
        landed[path.name] = time.time()
        path.rename(landing / path.name)


def _idle_since(query: StreamingQuery, since: float) -> bool:
    """Whether the query has reported a trigger that found no new input after `since` (epoch seconds)."""
    progress = query.lastProgress
    if query.exception():
        raise RuntimeError(f"stream {query.name} failed: {query.exception()}")
    if not progress or progress.get("numInputRows", 1) != 0:
        return False
    at = datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00")).timestamp()
    return at >= since


def _wait_idle(query: StreamingQuery, since: float) -> float:
    """Wait until `query` is idle after `since`; returns when that was seen."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    while not _idle_since(query, since):
        if time.monotonic() > deadline:
            raise TimeoutError(f"stream {query.name} not caught up {CATCH_UP_TIMEOUT_S}s after the feed ended")
        time.sleep(1)
    return time.time()


def _file_commits(spark: SparkSession, table: Path) -> DataFrame:
    """(data file name, commit time) for every file a version of the Delta table at `table` added."""
    rows = []
    for log in sorted((table / "_delta_log").glob("*.json")):
        committed, added = None, []
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                committed = datetime.fromtimestamp(action["commitInfo"]["timestamp"] / 1000, UTC)
            if "add" in action:
                added.append(Path(action["add"]["path"]).name)
        rows += [(name, committed) for name in added]
    return spark.createDataFrame(rows, "data_file STRING, bronze_at TIMESTAMP")


def _batch_starts(spark: SparkSession, settings: Settings, job: str) -> DataFrame:
    """A job's batches as [started_at, next batch's start): a commit in that span came from that batch."""
    starts = sorted(r.started_at for r in job_runs(spark, settings, job))
    spans = [(s, e) for s, e in zip(starts, [*starts[1:], datetime(9999, 1, 1)], strict=True)]
    return spark.createDataFrame(spans, "batch_start TIMESTAMP, next_start TIMESTAMP")


def _post_images(spark: SparkSession, settings: Settings, table: str) -> DataFrame:
    """Every row version a table's commits wrote (inserts and updates), with the commit's time."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .load(str(settings.table_path(table)))
        .filter(F.col("_change_type").isin("insert", "update_postimage"))
        .withColumnRenamed("_commit_timestamp", "committed_at")
    )


def _by_batch(commits: DataFrame, batches: DataFrame) -> DataFrame:
    """Each commit with the start of the batch that wrote it."""
    return commits.join(
        F.broadcast(batches),
        (commits.committed_at >= batches.batch_start) & (commits.committed_at < batches.next_start),
    ).drop("next_start")


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "max": max(values)}


def measure(spark: SparkSession, settings: Settings, landed: dict[str, float], skip: int) -> dict:
    """Per event: landing -> bronze -> silver session -> gold score, from the tables' commit times."""
    table = settings.table_path
    landed_at = spark.createDataFrame(
        [(name, datetime.fromtimestamp(at, UTC)) for name, at in landed.items()], "file STRING, landed_at TIMESTAMP"
    )
    late = spark.read.format("delta").load(str(table("silver.late_events"))).select("anonymous_id", "event_id")
    events = (
        spark.read.format("delta")
        .load(str(table("bronze.events")))
        .select(
            "anonymous_id",
            "event_id",
            "occurred_at",
            F.element_at(F.split("source_file", "/"), -1).alias("file"),
            F.col("_metadata.file_name").alias("data_file"),
        )
        .join(landed_at, "file")
        .join(_file_commits(spark, table("bronze.events")), "data_file")
        .join(late, ["anonymous_id", "event_id"], "left_anti")
        .filter(~F.col("file").isin(*sorted(landed)[:skip]))
    )
    sessions = _by_batch(
        _post_images(spark, settings, "silver.sessions").select(
            "session_id", "anonymous_id", "session_start", "session_end", "committed_at"
        ),
        _batch_starts(spark, settings, "silver"),
    )
    in_silver = (
        events.join(sessions, "anonymous_id")
        .filter(F.col("occurred_at").between(F.col("session_start"), F.col("session_end")))
        .filter(F.col("batch_start") >= F.col("bronze_at"))  # the batch that wrote it had read the event
        .groupBy("anonymous_id", "event_id", "occurred_at", "landed_at", "bronze_at")
        .agg(F.min_by(F.struct("committed_at", "session_id"), "committed_at").alias("first"))
        .select("*", F.col("first.committed_at").alias("silver_at"), F.col("first.session_id").alias("session_id"))
        .drop("first")
    )
    scores = _by_batch(
        _post_images(spark, settings, "gold.session_scores").select(
            "session_id", F.col("session_start").alias("s_start"), F.col("session_end").alias("s_end"), "committed_at"
        ),
        _batch_starts(spark, settings, "gold"),
    )
    in_gold = (
        in_silver.join(scores, "session_id", "left")
        .withColumn("covers", F.col("occurred_at").between(F.col("s_start"), F.col("s_end")))
        .withColumn("ok", F.col("covers") & (F.col("batch_start") >= F.col("silver_at")))
        .groupBy("anonymous_id", "event_id", "landed_at", "bronze_at", "silver_at")
        .agg(F.min(F.when(F.col("ok"), F.col("committed_at"))).alias("gold_at"))
    )
    rows = in_gold.collect()
    total = events.count()

    def seconds(later: str, earlier: str) -> list[float]:
        return [(r[later] - r[earlier]).total_seconds() for r in rows if r[later] is not None]

    result = {
        "events_measured": total,
        "events_in_silver": len(rows),
        "events_in_gold": sum(1 for r in rows if r.gold_at is not None),
        "landing_to_bronze_s": _stats(seconds("bronze_at", "landed_at")),
        "landing_to_silver_s": _stats(seconds("silver_at", "landed_at")),
        "landing_to_gold_s": _stats(seconds("gold_at", "landed_at")),
        "bronze_to_silver_s": _stats(seconds("silver_at", "bronze_at")),
        "silver_to_gold_s": _stats(seconds("gold_at", "silver_at")),
    }
    floor = result["landing_to_bronze_s"]["p50"]
    for layer in ("silver", "gold"):
        p50 = result[f"landing_to_{layer}_s"]["p50"]
        result[f"ratio_{layer}_p50_vs_bronze_p50"] = p50 / floor if p50 is not None and floor else None
    return result


def run(base: Settings, events: int, files: int, interval: float, trigger: str, skip: int) -> dict:
    settings = replace(base.with_root(base.lakehouse / "run"), trigger=trigger)
    staging = base.lakehouse / "staging"
    summary = simulate(staging, base.lakehouse / "truth", events=events, seed=29, lines_per_file=-(-events // files))
    staged = sorted(staging.glob("events-*.ndjson"))
    spark = build_spark(settings, app_name="intentlake-bench-freshness")
    ensure_tables(spark, settings)
    settings.landing.mkdir(parents=True, exist_ok=True)
    landed: dict[str, float] = {}
    queries = [
        bronze.run(spark, settings, trigger=trigger, wait=False),
        silver.run(spark, settings, trigger=trigger, wait=False),
        gold.run(spark, settings, trigger=trigger, wait=False),
    ]
    feeder = threading.Thread(target=_feed, args=(staged, settings.landing, interval, landed), daemon=True)
    feeder.start()
    feeder.join()
    fed = time.time()
    since = max(landed.values())
    try:
        for query in queries:  # each stream idle after the one upstream of it was: all caught up
            since = _wait_idle(query, since)
    finally:
        for query in queries:
            query.stop()
    caught_up = since - fed
    figures = measure(spark, settings, landed, skip)
    batches = {job: len(job_runs(spark, settings, job)) for job in ("bronze", "silver", "gold")}
    spark.stop()
    return {
        "events": summary.events,
        "lines": summary.lines,
        "files": len(staged),
        "interval_s": interval,
        "events_per_s": summary.lines / (len(staged) * interval),
        "trigger": trigger,
        "skipped_files": skip,
        "caught_up_s_after_last_file": caught_up,
        "batches": batches,
        **figures,
    }


def report(r: dict) -> str:
    def line(label: str, key: str) -> str:
        s = r[key]
        if s["p50"] is None:
            return f"    {label:<40} no event measured"
        return f"    {label:<40} p50 {s['p50']:6.1f}s  p99 {s['p99']:6.1f}s  max {s['max']:6.1f}s"

    def ratio(layer: str) -> str:
        value = r[f"ratio_{layer}_p50_vs_bronze_p50"]
        return "n/a" if value is None else f"{value:.1f}x"

    return "\n".join([
        f"feed: {r['lines']:,} lines in {r['files']} files, one every {r['interval_s']:.0f}s "
        f"(~{r['events_per_s']:,.0f} events/s), trigger {r['trigger']!r}; all three streams caught up "
        f"{r['caught_up_s_after_last_file']:.0f}s after the last file; batches {r['batches']}",
        f"  freshness over {r['events_measured']:,} on-time events (first {r['skipped_files']} files left out); "
        f"{r['events_in_silver']:,} seen in silver, {r['events_in_gold']:,} in gold:",
        line("landing -> silver.sessions", "landing_to_silver_s"),
        line("landing -> gold.session_scores", "landing_to_gold_s"),
        line("landing -> bronze.events (baseline)", "landing_to_bronze_s"),
        line("  of which bronze -> silver", "bronze_to_silver_s"),
        line("  of which silver -> gold", "silver_to_gold_s"),
        f"    ratio p50 vs landing -> bronze p50: silver {ratio('silver')}, gold {ratio('gold')}",
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=9_000, help="events to simulate (default %(default)s)")
    parser.add_argument("--files", type=int, default=30, help="files the events arrive in (default %(default)s)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between two files (default %(default)s)")
    parser.add_argument("--trigger", default="5 seconds", help="processing-time trigger of the three streams")
    parser.add_argument("--skip", type=int, default=3, help="first files left out of the figures (default %(default)s)")
    args = parser.parse_args()
    if args.skip >= args.files:
        parser.error(f"--skip {args.skip} leaves no file of --files {args.files} to measure")
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-freshness-") as tmp:
        print(f"freshness on {os.cpu_count()} cores", flush=True)
        result = run(Settings.from_env().with_root(Path(tmp)), args.events, args.files, args.interval,
                     args.trigger, args.skip)  # fmt: skip
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
