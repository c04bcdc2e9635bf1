"""Gold: how fast sessions are scored, and how long a change in silver.sessions takes to reach its score.

    .venv/bin/python bench/gold_scoring.py [--sessions 200000] [--persons 50000] [--changes 10]

Throughput. silver.sessions is filled with `sessions` synthetic closed sessions (random but plausible
feature values over `persons` persons; scoring cost does not depend on realism), and each way of scoring
them all is timed end to end, reading silver and writing a Delta table:
- baseline: read silver.sessions and write the gold.session_scores columns with a constant score (the I/O
  floor every scorer pays);
- weighted / learned: the shipped scorers (config/scoring.yaml; a logistic regression over
  config/models.yaml's features, fitted on these rows) with the segment inputs (micro-moments and user
  features as of the day joined in) and the segment rules;
- the gold job's batch (`process_gold_batch` for every person: score, segment, MERGE into
  gold.session_scores and gold.user_segments, segment history) into empty tables.

Latency. The gold stream runs with a `--trigger` processing-time trigger while `changes` sessions are
changed in silver.sessions one at a time (a Delta UPDATE, as silver's MERGE would), `--gap` seconds apart.
Latency of a change = the commit time of the gold.session_scores version that carries its new score minus
the commit time of the silver change (both read back from the Delta histories afterwards). The baseline
is the floor: the same one-person change processed by calling the gold batch directly (no stream, no
trigger wait).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

from benchlib import percentile  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import load_models, load_scoring, load_segments
from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.gold import job as gold
from spark_jobs.gold.job import process_gold_batch
from spark_jobs.gold.models import WeightedScorer, resolve_champion
from spark_jobs.gold.scoring import assign_segments, segment_inputs
from spark_jobs.gold.train import fit
from spark_jobs.settings import Settings
from spark_jobs.spark import build_spark

DAY = date(2026, 11, 2)


def synthetic_sessions(spark: SparkSession, sessions: int, persons: int) -> DataFrame:
    """`sessions` closed sessions over `persons` persons with random feature values, in the contract's shape."""
    r = F.rand(seed=7)
    n = F.col("id")
    start = F.lit(f"{DAY} 00:00:00").cast("timestamp") + F.make_dt_interval(secs=(n * 37) % 86_000)
    cols = {
        "session_id": F.concat(F.lit("s"), n.cast("string")),
        "person_id": F.concat(F.lit("p"), (n % persons).cast("string")),
        "anonymous_id": F.concat(F.lit("a"), (n % persons).cast("string")),
        "user_id": F.lit(None).cast("string"),
        "session_start": start,
        "session_end": start + F.make_dt_interval(secs=F.floor(r * 900)),
        "is_closed": F.lit(True),
        "sessionized_by": F.lit("idle_timeout"),
        "event_count": (F.floor(F.rand(1) * 30) + 1).cast("int"),
        "page_depth": F.floor(F.rand(2) * 8).cast("int"),
        "page_views": F.floor(F.rand(3) * 10).cast("int"),
        "dwell_seconds": F.rand(4) * 90,
        "dwell_total_seconds": F.rand(5) * 600,
        "engaged_seconds": F.rand(6) * 900,
        "max_scroll_depth": F.rand(7) * 100,
        "scroll_velocity": F.rand(8) * 4,
        "scrolls": F.floor(F.rand(9) * 12).cast("int"),
        "clicks": F.floor(F.rand(10) * 12).cast("int"),
        "click_density": F.rand(11) * 3,
        "product_views": F.floor(F.rand(12) * 6).cast("int"),
        "distinct_products": F.floor(F.rand(13) * 4).cast("int"),
        "repeat_product_views": F.floor(F.rand(14) * 3).cast("int"),
        "cart_adds": F.floor(F.rand(15) * F.rand(16) * 3).cast("int"),
        "wishlist_adds": F.floor(F.rand(17) * 1.2).cast("int"),
        "searches": F.floor(F.rand(18) * 4).cast("int"),
        "search_refinements": F.floor(F.rand(19) * 3).cast("int"),
        "checkout_started": F.rand(20) < 0.1,
        "converted": F.rand(21) < 0.08,
        "drop_off_page": F.lit("/p"),
        "traffic_source": F.lit("direct"),
        "traffic_medium": F.lit("direct"),
        "device_type": F.when(F.rand(22) < 0.5, "mobile").otherwise("desktop"),
        "timezone": F.lit("Europe/Paris"),
        "local_hour": F.floor(F.rand(23) * 24).cast("int"),
        "session_phase": F.lit("browsing"),
        "duration_seconds": F.rand(24) * 900,
        "updated_at": F.current_timestamp(),
        "session_date": F.lit(DAY),
    }
    contract = table_contract("silver.sessions")
    frame = spark.range(sessions).select(*(c.alias(k) for k, c in cols.items()))
    return frame.select(*(F.col(c) if c in cols else F.lit(None).alias(c) for c in contract.column_names)).select(
        *(F.col(c).cast(contract.column_types[c].lower()) if contract.column_types[c] != "MAP" else F.col(c)
          for c in contract.column_names)
    )  # fmt: skip


def _timed(label: str, work) -> float:
    t0 = time.perf_counter()
    work()
    seconds = time.perf_counter() - t0
    print(f"  {label:<44} {seconds:7.1f} s")
    return seconds


def throughput(spark: SparkSession, settings: Settings, sessions: int) -> None:
    out = settings.lakehouse / "_bench_out"
    silver = spark.read.format("delta").load(str(settings.table_path("silver.sessions")))
    rules = load_segments(settings.segments_file)
    columns = table_contract("gold.session_scores").column_names
    weighted = WeightedScorer(load_scoring(settings.scoring_file))
    train = segment_inputs(spark, settings, silver).withColumn("label", F.col("converted").cast("double"))
    learned = fit(train.sample(0.2, seed=3), load_models(settings.models_file), "learned-bench")

    def write(frame: DataFrame, name: str) -> None:
        frame.select(*columns).write.format("delta").mode("overwrite").save(str(out / name))

    def baseline() -> None:
        constant = silver.withColumn("intent_score", F.lit(0.0)).withColumn(
            "contributions", F.create_map(F.lit("x"), F.lit(0.0))
        )
        write(constant.withColumn("model_version", F.lit("none")).withColumn("segment", F.lit("Standard")), "base")

    def scored(scorer) -> None:
        write(assign_segments(scorer.score(segment_inputs(spark, settings, silver)), rules), scorer.version)

    print(f"throughput ({sessions:,} sessions, read silver -> write Delta):")
    base = _timed("baseline: constant score (I/O floor)", baseline)
    w = _timed("weighted: score + segment inputs + segments", lambda: scored(weighted))
    lr = _timed("learned: score + segment inputs + segments", lambda: scored(learned))
    persons = silver.select("person_id").distinct()
    job = _timed("gold batch: all persons, MERGE + history", lambda: process_gold_batch(
        spark, settings, persons, 0, "bench", weighted, rules))  # fmt: skip
    for label, seconds in (("baseline", base), ("weighted", w), ("learned", lr), ("gold batch", job)):
        print(f"  {label:<12} {sessions / seconds:>10,.0f} sessions/s   {seconds / base:5.2f}x the baseline's time")


def latency(spark: SparkSession, settings: Settings, changes: int, gap: float, trigger: str) -> None:
    model, rules = gold.load_config(spark, settings)
    scorer = resolve_champion(spark, settings, model)
    sessions_path = str(settings.table_path("silver.sessions"))
    silver_table = DeltaTable.forPath(spark, sessions_path)
    live = replace(settings, trigger=trigger)
    query = gold.run(spark, live, trigger=trigger, wait=False)
    try:
        # let the stream catch up with the table as it is (the first batch scores everything)
        while query.lastProgress is None or query.lastProgress.get("numInputRows", 1) > 0:
            time.sleep(2)
        changed: list[tuple[str, int]] = []
        for i in range(changes):
            session_id = f"s{1000 + i * 7}"
            # product views 0 <-> 5 always moves the weighted and the learned score
            views = F.when(F.col("product_views") > 0, F.lit(0)).otherwise(F.lit(5)).cast("int")
            silver_table.update(F.col("session_id") == session_id,
                                {"product_views": views, "updated_at": F.current_timestamp()})  # fmt: skip
            changed.append((session_id, silver_table.history(1).first().version))
            time.sleep(gap)
        # stop only once the stream is idle after the last change (stopping mid-batch interrupts Spark jobs)
        last = silver_table.history(1).first().timestamp
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            progress = query.lastProgress or {}
            batch_start = progress.get("timestamp", "")
            if progress.get("numInputRows", 1) == 0 and batch_start > last.strftime("%Y-%m-%dT%H:%M:%S"):
                break
            time.sleep(2)
    finally:
        query.stop()
    silver_commits = {r.version: r.timestamp for r in silver_table.history().select("version", "timestamp").collect()}
    scores = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .load(str(settings.table_path("gold.session_scores")))
    )
    waits = []
    for session_id, version in changed:
        row = (
            scores.filter((F.col("session_id") == session_id) & (F.col("_change_type") == "update_postimage"))
            .filter(F.col("_commit_timestamp") >= F.lit(silver_commits[version]))
            .agg(F.min("_commit_timestamp").alias("at"))
            .first()
        )
        if row.at is not None:
            waits.append((row.at - silver_commits[version]).total_seconds())
    # the floor: one person's change through the same batch code, called directly
    floor = []
    for i in range(min(5, changes)):
        persons = spark.createDataFrame([(f"p{1000 + i * 7}",)], "person_id STRING")
        t0 = time.perf_counter()
        process_gold_batch(spark, settings, persons, 10_000 + i, "bench-floor", scorer, rules)
        floor.append(time.perf_counter() - t0)
    print(f"latency silver change -> gold score ({len(waits)} of {changes} changes seen, trigger {trigger}):")
    if waits:
        print(f"  stream:  p50 {statistics.median(waits):5.1f} s  p95 {percentile(waits, 0.95):5.1f} s  "
              f"max {max(waits):5.1f} s")  # fmt: skip
    print(f"  floor (one gold batch, called directly): p50 {statistics.median(floor):5.1f} s  max {max(floor):5.1f} s")
    if waits:
        print(f"  ratio stream p50 / floor p50: {statistics.median(waits) / statistics.median(floor):.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=200_000)
    parser.add_argument("--persons", type=int, default=50_000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--gap", type=float, default=15.0, help="seconds between silver changes")
    parser.add_argument("--trigger", default="2 seconds", help="gold stream trigger for the latency run")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-gold-") as tmp:
        settings = replace(Settings.from_env().with_root(Path(tmp) / "lakehouse"), shuffle_partitions=4)
        spark = build_spark(settings, app_name="bench-gold")
        ensure_tables(spark, settings)
        t0 = time.perf_counter()
        synthetic_sessions(spark, args.sessions, args.persons).write.format("delta").mode("append").save(
            str(settings.table_path("silver.sessions"))
        )
        print(f"silver.sessions: {args.sessions:,} synthetic sessions written in {time.perf_counter() - t0:.1f} s")
        throughput(spark, settings, args.sessions)
        if not args.skip_latency:
            small = replace(Settings.from_env().with_root(Path(tmp) / "small"), shuffle_partitions=2)
            ensure_tables(spark, small)
            synthetic_sessions(spark, 5_000, 2_000).write.format("delta").mode("append").save(
                str(small.table_path("silver.sessions"))
            )
            latency(spark, small, args.changes, args.gap, args.trigger)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
