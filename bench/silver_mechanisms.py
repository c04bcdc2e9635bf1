"""Silver sessions: which mechanism keeps the open sessions? The MERGE-based design intentlake ships
against a Spark state store (transformWithStateInPandas on RocksDB), on the same bronze input.

    .venv/bin/python bench/silver_mechanisms.py [--events 6000] [--files 6] [--batch-files 4] [--only state]

Bronze is filled once (simulated events, `files` landing files, one bronze commit each); each mechanism
then runs over a copy of it as a stream, `batch-files` bronze data files per micro-batch, into its own
silver.sessions.

- merge (shipped): the production silver job. Its open sessions live in silver.sessions itself; each
  batch reads back the touched devices' open sessions and their events from the Delta tables, recomputes
  them and MERGEs them. Its full batch also resolves identities, finds micro-moments and re-attributes;
  the "sessions path" figure sums only the phases the state-store variant also does (read, late, scope,
  sessionize, sessions, merge), so the two compare like for like.
- state store (the alternative): the same session rules (`assign_sessions`) and the same session
  features (`build_sessions`) and MERGE, but each device's open-session events are kept in Spark's RocksDB
  state store (Arrow bytes per device, dropped by an event-time timeout once the watermark passes the
  sessions), so a batch reads nothing back from Delta. Events behind the watermark are dropped by Spark
  (the shipped job records them in silver.late_events); no identity, no micro-moments.

Python's state APIs here (pyspark 4.1.3 with pandas 3.1): applyInPandasWithState fails inside PySpark's
own serializer ("'float' object cannot be interpreted as an integer"), so the state store runs on
transformWithStateInPandas, whose output frames must be built with object columns (pandas 3 string
columns reach Arrow as chunked arrays it rejects). The shipped job's sessionizer is Arrow-only
(applyInArrow) and meets neither.

Printed per mechanism: events/s over the whole catch-up, batch p50/p95 (an open session's freshness is one
trigger wait plus one batch), state kept between batches (RocksDB checkpoint, or none), and the sessions
each produced (compared on start, end, event count and closed). The ratio is the state store's steady
batch against the MERGE design's sessions path in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyarrow as pa
from benchlib import dir_size, job_runs, percentile  # bench/benchlib.py (scripts run as files: bench/ is on the path)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming.stateful_processor import StatefulProcessor, StatefulProcessorHandle

from spark_jobs.bronze import job as bronze
from spark_jobs.contracts import ensure_tables
from spark_jobs.privacy import hash_key
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.silver.context import add_context
from spark_jobs.silver.sessions import assign_sessions, build_sessions
from spark_jobs.simulate import simulate
from spark_jobs.spark import build_spark

_STATE = "events BINARY"
_OUT = (
    "anonymous_id STRING, event_id STRING, session_id STRING, payload STRING, session_key STRING, "
    "sessionized_by STRING, retired_key STRING"
)
_KEPT = ["event_id", "session_id", "at_us", "payload", "session_key"]
SESSIONS_PATH = ("read", "late", "scope", "sessionize", "sessions", "merge")


def _to_bytes(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame[_KEPT], preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_bytes(data: bytes) -> pd.DataFrame:
    return pa.ipc.open_stream(data).read_all().to_pandas()


def _advance(
    anon: str, old: bytes | None, new: pd.DataFrame, watermark_us: int, timeout_us: int, max_us: int
) -> tuple[pd.DataFrame, bytes | None, int | None]:
    """One device's kept events + its new ones -> (rows to emit, events to keep, timer in ms).

    Emitted: every event of each session the new events touched (or re-keyed), with its key, and one row per
    session key that no longer exists (`retired_key`: a late event bridged two sessions)."""
    new = new.assign(at_us=new["at_us"].astype("int64"), session_key=None)[_KEPT]
    events = pd.concat([_from_bytes(old), new], ignore_index=True) if old is not None else new
    client = [None if pd.isna(c) else c for c in events["session_id"]]
    keys, reasons = assign_sessions(
        anon, events["event_id"].tolist(), client, events["at_us"].tolist(), timeout_us, max_us
    )
    before = events["session_key"].tolist()
    events["session_key"], events["sessionized_by"] = keys, reasons
    fresh = len(events) - len(new)
    touched = set(keys[fresh:]) | {k for k, b in zip(keys, before, strict=True) if b is not None and b != k}
    retired = sorted({b for b in before if b is not None} - set(keys))
    out = events[events["session_key"].isin(touched)].reset_index(drop=True)
    rows = {c.split()[0]: [None] * (len(out) + len(retired)) for c in _OUT.split(", ")}
    rows["anonymous_id"] = [anon] * (len(out) + len(retired))
    for column in ("event_id", "session_id", "payload", "session_key", "sessionized_by"):
        rows[column][: len(out)] = out[column].tolist()
    rows["retired_key"][len(out) :] = retired
    # keep the events of sessions the watermark has not passed; the timer fires when it passes the last
    ends = events.groupby("session_key")["at_us"].agg(["min", "max"])
    open_ = ends[ends["max"] + timeout_us > watermark_us]
    if open_.empty:
        return pd.DataFrame(rows, dtype=object), None, None
    kept = _to_bytes(events[events["at_us"] >= open_["min"].min()])
    return pd.DataFrame(rows, dtype=object), kept, int((open_["max"].max() + timeout_us) // 1000) + 1


class OpenSessions(StatefulProcessor):
    """transformWithStateInPandas: per device, the events of its open sessions as one Arrow value."""

    def __init__(self, timeout_s: int, max_s: int) -> None:
        self.timeout_us, self.max_us = timeout_s * 1_000_000, max_s * 1_000_000

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.kept = handle.getValueState("open_events", _STATE)

    def handleInputRows(self, key, rows, timerValues):
        old = self.kept.get()[0] if self.kept.exists() else None
        new = pd.concat(list(rows), ignore_index=True)
        watermark_us = max(timerValues.getCurrentWatermarkInMs(), 0) * 1000
        out, kept, timer = _advance(key[0], old, new, watermark_us, self.timeout_us, self.max_us)
        for registered in list(self.handle.listTimers()):
            self.handle.deleteTimer(registered)
        if kept is None:
            self.kept.clear()
        else:
            self.kept.update((kept,))
            self.handle.registerTimer(timer)
        yield out

    def handleExpiredTimer(self, key, timerValues, expiredTimerInfo):
        self.kept.clear()  # the watermark passed every kept session: closed, nothing to emit
        return iter([])

    def close(self) -> None:
        pass


def _session_ids(keys: DataFrame) -> DataFrame:
    """session_key -> the session id the sessions builder gives it (a hash of device and client id, or of
    device and start; a split client session's later piece `anon#c#id#start` is not produced here)."""
    parts = F.split("retired_key", "#")
    client = F.concat_ws("|", F.length("anonymous_id").cast("string"), "anonymous_id",
                         F.length(parts[2]).cast("string"), parts[2])  # fmt: skip
    return keys.select(
        "anonymous_id",
        F.when(F.size(parts) == 3, F.concat(F.lit("c-"), F.substring(F.sha2(client, 256), 1, 32)))
        .otherwise(F.concat(F.lit("s-"), F.substring(F.sha2(F.concat_ws("|", "anonymous_id", parts[1]), 256), 1, 32)))
        .alias("session_id"),
    )


def run_state_store(spark: SparkSession, settings: Settings) -> tuple[float, list[dict]]:
    """The state-store sessionizer over all of bronze, one bronze file per micro-batch."""
    config = silver.SilverConfig.load(settings)
    rules = config.rules
    ensure_tables(spark, settings)
    bronze_path = str(settings.table_path("bronze.events"))
    schema = spark.read.format("delta").load(bronze_path).schema
    newest: list = [None]  # newest event time so far: minus the lateness, what the MERGE closes by

    def batch(frame: DataFrame, batch_id: int) -> None:
        frame = frame.localCheckpoint(eager=True)
        events = frame.filter(F.col("retired_key").isNull())
        full = events.select(F.from_json("payload", schema).alias("e"), "session_key", "sessionized_by").select(
            "e.*", "session_key", "sessionized_by"
        )
        seen = full.agg(F.max("occurred_at")).first()[0]  # as the shipped job: this batch's events count
        newest[0] = max((t for t in (newest[0], seen) if t is not None), default=None)
        watermark_us = None
        if newest[0] is not None:
            watermark_us = int((newest[0].timestamp() - config.allowed_lateness_seconds) * 1_000_000)
        keyed = add_context(full, rules.context, rules.ip_table)
        fresh = build_sessions(keyed, rules, watermark_us, key=hash_key(settings)).localCheckpoint(eager=True)
        scopes = fresh.select("session_id", "anonymous_id").unionByName(
            _session_ids(frame.filter(F.col("retired_key").isNotNull()))
        )
        silver.merge_sessions(spark, settings, fresh, scopes, watermark_us, rules.timeout_seconds)

    stream = (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", settings.silver_max_files_per_trigger)
        .load(bronze_path)
        .withWatermark("occurred_at", f"{config.allowed_lateness_seconds} seconds")
        .select(
            "anonymous_id",
            "event_id",
            "session_id",
            "occurred_at",
            F.unix_micros("occurred_at").alias("at_us"),
            F.to_json(F.struct(*schema.fieldNames())).alias("payload"),
        )
    )
    sessionized = stream.groupBy("anonymous_id").transformWithStateInPandas(
        OpenSessions(rules.timeout_seconds, rules.max_length_seconds), _OUT, "Append", "EventTime"
    )
    t0 = time.monotonic()
    query = (
        sessionized.writeStream.foreachBatch(batch)
        .option("checkpointLocation", str(settings.checkpoint("state-store-sessions")))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    seconds = time.monotonic() - t0
    return seconds, [json.loads(p.json) for p in query.recentProgress]


def bench(spark: SparkSession, base: Settings, events: int, files: int, batch_files: int, only: str) -> None:
    source = replace(base.with_root(base.lakehouse / "source"), max_files_per_trigger=1)
    simulate(source.landing, source.truth, events=events, seed=23, lines_per_file=-(-events // files))
    ensure_tables(spark, source)
    bronze.run(spark, source)
    bronze_rows = spark.read.format("delta").load(str(source.table_path("bronze.events"))).count()
    data_files = len(spark.read.format("delta").load(str(source.table_path("bronze.events"))).inputFiles())
    print(f"\ninput: {bronze_rows:,} bronze events in {data_files} data files, {batch_files} per micro-batch")

    def copy_of(name: str) -> Settings:  # the same bronze commits, file for file (Delta paths are relative)
        settings = replace(base.with_root(base.lakehouse / name), silver_max_files_per_trigger=batch_files)
        shutil.copytree(source.table_path("bronze.events"), settings.table_path("bronze.events"))
        ensure_tables(spark, settings)
        return settings

    def sessions_of(settings: Settings) -> DataFrame:
        return spark.read.format("delta").load(str(settings.table_path("silver.sessions")))

    merge_settings, state_settings = copy_of("merge"), copy_of("state-store")
    path: list[float] = []
    if only in ("both", "merge"):
        t0 = time.monotonic()
        silver.run(spark, merge_settings)
        seconds = time.monotonic() - t0
        runs = job_runs(spark, merge_settings, "silver")
        full = [r.duration_ms / 1000 for r in runs[1:]]
        path = [sum(int(r.details.get(f"{p}_ms", 0)) for p in SESSIONS_PATH) / 1000 for r in runs[1:]]
        checkpoint = dir_size(merge_settings.checkpoint("silver"))[0] / 1024
        print(f"  merge (shipped)       {bronze_rows / seconds:7,.0f} events/s over the catch-up ({seconds:.0f}s, "
              f"{len(runs)} batches); steady batch p50 {statistics.median(full):.1f}s "
              f"p95 {percentile(full, 0.95):.1f}s (whole batch), sessions path p50 {statistics.median(path):.1f}s "
              f"p95 {percentile(path, 0.95):.1f}s; "
              f"state between batches: none (checkpoint {checkpoint:,.0f} KiB, offsets only)")  # fmt: skip
    if only in ("both", "state"):
        seconds, progress = run_state_store(spark, state_settings)
        batches = [p for p in progress if p["numInputRows"]]
        steady = [p["durationMs"]["triggerExecution"] / 1000 for p in batches[1:]]
        last = batches[-1]["stateOperators"][0] if batches and batches[-1]["stateOperators"] else {}
        state_dir = dir_size(state_settings.checkpoint("state-store-sessions") / "state")
        print(f"  state store (RocksDB) {bronze_rows / seconds:7,.0f} events/s over the catch-up ({seconds:.0f}s, "
              f"{len(batches)} batches); steady batch p50 {statistics.median(steady):.1f}s "
              f"p95 {percentile(steady, 0.95):.1f}s; state between batches: {last.get('numRowsTotal', '?')} devices, "
              f"{state_dir[0] / 1024:,.0f} KiB on disk in {state_dir[1]} files, "
              f"{last.get('memoryUsedBytes', 0) / 1024:,.0f} KiB in memory")  # fmt: skip
        if path:
            ratio = statistics.median(steady) / statistics.median(path)
            print(f"  ratio: a steady state-store batch takes {ratio:.2f}x the MERGE design's sessions path")
    if only == "both":
        merged, stated = sessions_of(merge_settings), sessions_of(state_settings)
        fields = ["session_id", "anonymous_id", "session_start", "session_end", "event_count", "is_closed"]
        differ = merged.select(*fields).exceptAll(stated.select(*fields)).count()
        shape = merged.select(*fields[:5]).exceptAll(stated.select(*fields[:5])).count()
        print(f"  sessions: merge {merged.count():,}, state store {stated.count():,}; {differ} of merge's rows "
              f"differ in start, end, event count or closed ({shape} in start, end or event count)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=6_000, help="events to simulate")
    parser.add_argument("--files", type=int, default=6, help="landing files (one bronze commit each)")
    parser.add_argument("--batch-files", type=int, default=4, help="bronze data files per silver micro-batch")
    parser.add_argument("--only", choices=("both", "merge", "state"), default="both", help="mechanisms to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intentlake-bench-") as tmp:
        base = Settings.from_env().with_root(Path(tmp))
        spark = build_spark(base, app_name="intentlake-bench")
        print(f"silver sessions mechanisms on {os.cpu_count()} cores ({base.spark_master})")
        bench(spark, base, args.events, args.files, args.batch_files, args.only)
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
