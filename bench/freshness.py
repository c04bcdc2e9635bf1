"""Freshness at a steady event rate: how long an event takes from landing to its session in silver and
its score in gold, with the layers running continuously.

    .venv/bin/python bench/freshness.py [--events 9000] [--files 30] [--interval 10] [--trigger "5 seconds"]
                                        [--mode streams|chained]

A simulated day is written to a staging folder in `files` NDJSON files (in arrival order); one file is
moved into the landing zone every `interval` seconds (a rename: never read half-written) while the layers
run in one Spark application: `--mode streams`, three streams each with a processing-time trigger of
`trigger`; `--mode chained`, `intentlake run all --trigger <trigger>` (operations.follow_pipeline: the
layers chained in cycles, each an availableNow stream, a cycle at most every `trigger`). Once the feed ends
and every layer has caught up (streams: each one idle after the one before it; chained: a cycle with nothing
new), they stop and the times are read back from the Delta logs and the queries' progress reports, so
measuring adds no load while the feed runs:

- landed: when the event's file appeared in the landing zone;
- bronze: the commit time of the bronze.events version that added the event's row (from the Delta log);
- silver: the first silver.sessions commit made by the first silver batch whose trigger started after that
  bronze commit (a batch reads what was committed before its trigger started; batches from the query's
  progress reports), or that batch's end if it changed no row there;
- gold: the same for gold.session_scores and the first gold batch that started after the silver commit.
  A batch that read the change has scored the event's session even when the score did not move, so
  this does not depend on a row changing (a session id may change when a late event moves its start).

Late events (silver.late_events: recorded, never shown in a session) are left out, and so are the first
`--skip` files (JVM warm-up, Python workers starting). The baseline is landing -> bronze, the floor every
design pays before silver can see an event; the ratios are silver's and gold's p50 over it.

Prints the figures and, as its last line, one JSON object (bench/pipeline.py reads it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from benchlib import percentile  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from spark_jobs import operations as op
from spark_jobs.bronze import job as bronze
from spark_jobs.contracts import ensure_tables
from spark_jobs.gold import job as gold
from spark_jobs.settings import Settings, interval_seconds
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from spark_jobs.spark import build_spark

CATCH_UP_TIMEOUT_S = 1800


def _feed(staged: list[Path], landing: Path, interval: float, landed: dict[str, float]) -> None:
    """Move one staged file into the landing zone every `interval` seconds."""
    start = time.time()
    for i, path in enumerate(staged):
        time.sleep(max(0.0, start + i * interval - time.time()))
        path.rename(landing / path.name)
        landed[path.name] = time.time()  # once the stream can see it


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


@dataclass(frozen=True)
class Commit:
    version: int
    at: datetime
    files: tuple[str, ...]  # data files it added


def commits(table: Path) -> list[Commit]:
    """A Delta table's commits from its log (commitInfo time, added data files), oldest first."""
    found = []
    for log in sorted(p for p in (table / "_delta_log").glob("*.json") if re.fullmatch(r"\d{20}\.json", p.name)):
        at, files = None, []
        for line in log.read_text().splitlines():
            action = json.loads(line)
            if "commitInfo" in action:
                at = datetime.fromtimestamp(action["commitInfo"]["timestamp"] / 1000, UTC)
            if "add" in action:
                files.append(Path(action["add"]["path"]).name)
        found.append(Commit(int(log.stem), at, tuple(files)))
    return found


@dataclass(frozen=True)
class Batch:
    started: datetime  # the trigger's start: what was committed upstream before it, the batch read
    ended: datetime


def _batches(reports: list[dict]) -> list[Batch]:
    """The micro-batches that read input, from progress reports (StreamingQueryProgress as dicts)."""
    found = []
    for progress in reports:
        if progress["numInputRows"] > 0:
            started = datetime.fromisoformat(progress["timestamp"].replace("Z", "+00:00"))
            found.append(Batch(started, started + timedelta(milliseconds=progress["durationMs"]["triggerExecution"])))
    return sorted(found, key=lambda b: b.started)


def batches(query: StreamingQuery) -> list[Batch]:
    """The query's micro-batches that read input, from its progress reports."""
    return _batches(query.recentProgress)


class Progress(StreamingQueryListener):
    """Every progress report of every query, by query name (chained mode starts a query per layer and cycle)."""

    def __init__(self) -> None:
        self.reports: dict[str, list[dict]] = {}
        self._lock = threading.Lock()

    def onQueryStarted(self, event) -> None:
        pass

    def onQueryProgress(self, event) -> None:
        report = json.loads(event.progress.json)
        with self._lock:
            self.reports.setdefault(report.get("name") or "", []).append(report)

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        pass

    def batches(self, name: str) -> list[Batch]:
        with self._lock:
            return _batches(list(self.reports.get(name, [])))


def visible_at(upstream_at: datetime, layer: list[Batch], table: list[Commit]) -> datetime | None:
    """When a change committed upstream at `upstream_at` became visible in the layer's table: the layer's
    first commit to it in the first batch that started after `upstream_at` (that batch read the change),
    or, if that batch wrote nothing there (no row of the table changed), the batch's end."""
    batch = next((b for b in layer if b.started >= upstream_at), None)
    if batch is None:
        return None
    return next((c.at for c in table if batch.started <= c.at <= batch.ended), batch.ended)


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "max": max(values)}


def measure(
    spark: SparkSession, settings: Settings, landed: dict[str, float], skip: int, layer_batches: dict[str, list[Batch]]
) -> dict:
    """Per event: landing -> bronze commit -> silver.sessions -> gold.session_scores (see the module doc)."""
    table = settings.table_path
    late = spark.read.format("delta").load(str(table("silver.late_events")))
    events = spark.read.format("delta").load(str(table("bronze.events")))
    same_event = (
        (events.anonymous_id == late.anonymous_id)
        & (events.event_id == late.event_id)
        & events.session_id.eqNullSafe(late.session_id)
    )
    rows = (
        events.join(late, same_event, "left_anti")
        .select(
            F.element_at(F.split("source_file", "/"), -1).alias("file"),
            F.col("_metadata.file_name").alias("data_file"),
        )
        .filter(~F.col("file").isin(*sorted(landed)[:skip]))
        .groupBy("file", "data_file")
        .count()
        .collect()
    )
    bronze_at = {f: c.at for c in commits(table("bronze.events")) for f in c.files}
    silver_batches, gold_batches = layer_batches["silver"], layer_batches["gold"]
    silver_commits, gold_commits = commits(table("silver.sessions")), commits(table("gold.session_scores"))
    spans: dict[str, list[float]] = {k: [] for k in ("bronze", "silver", "gold", "bronze_silver", "silver_gold")}
    seen = {"silver": 0, "gold": 0}
    total = 0
    for row in rows:
        total += row["count"]
        arrived = datetime.fromtimestamp(landed[row.file], UTC)
        in_bronze = bronze_at[row.data_file]
        in_silver = visible_at(in_bronze, silver_batches, silver_commits)
        in_gold = visible_at(in_silver, gold_batches, gold_commits) if in_silver else None
        for key, later, earlier in (("bronze", in_bronze, arrived), ("silver", in_silver, arrived),
                                    ("gold", in_gold, arrived), ("bronze_silver", in_silver, in_bronze),
                                    ("silver_gold", in_gold, in_silver)):  # fmt: skip
            if later is not None:
                spans[key] += [(later - earlier).total_seconds()] * row["count"]
        seen["silver"] += row["count"] if in_silver else 0
        seen["gold"] += row["count"] if in_gold else 0
    result = {
        "events_measured": total,
        "events_in_silver": seen["silver"],
        "events_in_gold": seen["gold"],
        "landing_to_bronze_s": _stats(spans["bronze"]),
        "landing_to_silver_s": _stats(spans["silver"]),
        "landing_to_gold_s": _stats(spans["gold"]),
        "bronze_to_silver_s": _stats(spans["bronze_silver"]),
        "silver_to_gold_s": _stats(spans["silver_gold"]),
    }
    floor = result["landing_to_bronze_s"]["p50"]
    for layer in ("silver", "gold"):
        p50 = result[f"landing_to_{layer}_s"]["p50"]
        result[f"ratio_{layer}_p50_vs_bronze_p50"] = p50 / floor if p50 is not None and floor else None
    return result


def _streams(
    spark: SparkSession, settings: Settings, trigger: str, feed: threading.Thread
) -> tuple[dict[str, list[Batch]], float]:
    """Three streams of one application, each on its own processing-time trigger. Returns each layer's
    batches and when the last one was seen caught up."""
    queries = {
        "bronze": bronze.run(spark, settings, trigger=trigger, wait=False),
        "silver": silver.run(spark, settings, trigger=trigger, wait=False),
        "gold": gold.run(spark, settings, trigger=trigger, wait=False),
    }
    feed.start()
    feed.join()
    since = time.time()
    try:
        for query in queries.values():  # each stream idle after the one upstream of it was: all caught up
            since = _wait_idle(query, since)
    finally:
        for query in queries.values():
            query.stop()
    return {layer: batches(query) for layer, query in queries.items()}, since


def _chained(
    spark: SparkSession, settings: Settings, trigger: str, feed: threading.Thread
) -> tuple[dict[str, list[Batch]], float]:
    """`intentlake run all --trigger <trigger>`: the layers chained in cycles (operations.follow_pipeline)."""
    progress = Progress()
    spark.streams.addListener(progress)
    stop = threading.Event()
    steps: list[tuple[float, object]] = []  # (when it finished, the step)
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            lakehouse = op.Lakehouse(settings, spark)
            for step in op.follow_pipeline(lakehouse, interval_seconds(trigger, "--trigger"), stop=stop.is_set):
                steps.append((time.time(), step))
        except BaseException as exc:  # reported below, in the main thread
            failed.append(exc)

    runner = threading.Thread(target=follow, daemon=True)
    runner.start()
    try:
        feed.start()
        feed.join()
        fed, deadline = time.time(), time.monotonic() + CATCH_UP_TIMEOUT_S
        while not failed and (caught_up := _idle_cycle(list(steps), fed)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"chained layers not caught up {CATCH_UP_TIMEOUT_S}s after the feed ended")
            time.sleep(0.5)
    finally:
        stop.set()
        runner.join()
        time.sleep(2)  # the listener bus delivers the last progress reports
        spark.streams.removeListener(progress)
    if failed:
        raise RuntimeError("the chained run failed") from failed[0]
    return {layer: progress.batches(layer) for layer in ("bronze", "silver", "gold")}, caught_up


def _idle_cycle(steps: list[tuple[float, object]], after: float) -> float | None:
    """When the chained layers were seen caught up: a bronze run that started after `after` (the last file
    had landed) and committed nothing, followed by the next cycle's bronze (silver and gold had nothing new).
    The time is that idle run's end; None until then."""
    layers = [(at, step) for at, step in steps if isinstance(step, op.LayerRun)]
    for (at, step), (_, following) in itertools.pairwise(layers):
        idle = step.layer == "bronze" and not step.changed
        if idle and at - step.seconds > after and following.layer == "bronze":
            return at
    return None


def run(base: Settings, events: int, files: int, interval: float, trigger: str, skip: int, mode: str) -> dict:
    settings = replace(base.with_root(base.lakehouse / "run"), trigger=trigger)
    staging = base.lakehouse / "staging"
    summary = simulate(staging, base.lakehouse / "truth", events=events, seed=29, lines_per_file=-(-events // files))
    staged = sorted(staging.glob("events-*.ndjson"))
    spark = build_spark(settings, app_name="intentlake-bench-freshness")
    spark.conf.set("spark.sql.streaming.numRecentProgressUpdates", "100000")  # every batch's progress is kept
    # an idle stream reports progress every second, not every 10 s: catching up is seen sooner (no batch runs)
    spark.conf.set("spark.sql.streaming.noDataProgressEventInterval", "1000")
    ensure_tables(spark, settings)
    settings.landing.mkdir(parents=True, exist_ok=True)
    landed: dict[str, float] = {}
    feeder = threading.Thread(target=_feed, args=(staged, settings.landing, interval, landed), daemon=True)
    layer_batches, idle_at = (_chained if mode == "chained" else _streams)(spark, settings, trigger, feeder)
    caught_up = idle_at - max(landed.values())
    figures = measure(spark, settings, landed, skip, layer_batches)
    spark.stop()
    return {
        "events": summary.events,
        "lines": summary.lines,
        "files": len(staged),
        "interval_s": interval,
        "events_per_s": summary.lines / (len(staged) * interval),
        "trigger": trigger,
        "mode": mode,
        "skipped_files": skip,
        "caught_up_s_after_last_file": caught_up,
        "batches": {layer: len(found) for layer, found in layer_batches.items()},
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
        f"(~{r['events_per_s']:,.0f} events/s), trigger {r['trigger']!r}, {r.get('mode', 'streams')}; all caught up "
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
    parser.add_argument("--mode", choices=("streams", "chained"), default="streams",
                        help="three streams on their own triggers, or the layers chained in cycles of at most one "
                             "trigger interval (`intentlake run all --trigger`) (default %(default)s)")  # fmt: skip
    args = parser.parse_args()
    if args.skip >= args.files:
        parser.error(f"--skip {args.skip} leaves no file of --files {args.files} to measure")
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-freshness-") as tmp:
        print(f"freshness on {os.cpu_count()} cores", flush=True)
        result = run(Settings.from_env().with_root(Path(tmp)), args.events, args.files, args.interval,
                     args.trigger, args.skip, args.mode)  # fmt: skip
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
