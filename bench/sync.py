"""Segment syncs: how close each destination gets to its vendor's rate limit, and how long the diff takes.

    .venv/bin/python bench/sync.py [--persons 1000000] [--changed 0.01] [--skip-diff] [--skip-rate]

Rate. Each destination type's adapter (spark_jobs/activation/vendors.py, with the shipped config's batch
size and default rate) sends synthetic members to its local stand-in (spark_jobs/activation/local_servers.py)
set to the vendor's documented limit, which answers 429 past it. Reference, in the same run: the limit
itself. Figures: requests/s against the limit (the goal is >= 90 %), rows/s against the most the limit
allows with the calls a batch needs (an upsert, plus HubSpot's list membership or Mailchimp's per-member
tag), 429s met.

Diff. A lakehouse with `persons` persons in gold.user_segments, gold.session_scores, gold.send_times and
silver.profiles (all with marketing consent and an email), and ops.sync_state holding what the destination
acknowledged before `changed` of them got a new intent score. Timed: `sync(mode="dry_run")` for
hubspot-like destination over every segment (the audience joins, the diff against the state, the counts:
everything a sync does before its first call), and `changes()` alone over the materialised audience.
Reference in the same run: DuckDB computing the same diff (full outer join on person_id, hash compare)
over the same tables read with deltalake.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

from spark_jobs.activation.destinations import load_destinations
from spark_jobs.activation.sync import in_flight
from spark_jobs.activation.transport import RetryPolicy
from spark_jobs.activation.vendors import ADAPTERS
from spark_jobs.settings import REPO_ROOT, Settings

# The vendors' documented limits the stand-ins enforce: (requests, per seconds)
LIMITS = {
    "hubspot": (100, 10.0),  # Free/Starter private app: 100 requests per 10 s
    "braze": (3000, 3.0),  # /users/track: 3,000 requests per 3 s
    "mailchimp": (10, 1.0),  # 10 simultaneous connections; the config's default 10 requests/s
    "webhook": (20, 1.0),  # what the shipped example asks for (the receiver's own limit)
}
ROWS = {"hubspot": 5_000, "braze": 150_000, "mailchimp": 200, "webhook": 20_000}


def _serve(kind: str, token: str, limit: tuple[int, float], ready) -> None:
    """A stand-in server in its own process (the client's threads do not share its interpreter lock)."""
    from spark_jobs.activation import local_servers

    if kind == "webhook":
        server = local_servers.WebhookReceiver(token)
        server.rate_limit = limit
    else:
        server = {"hubspot": local_servers.HubSpotServer, "braze": local_servers.BrazeServer,
                  "mailchimp": local_servers.MailchimpServer}[kind](token, rate_limit=limit)  # fmt: skip
    with server:
        ready.put(server.url)
        while True:
            time.sleep(3600)


def bench_rate(kind: str, rows: int, concurrency: int | None = None, **options: object) -> dict:
    import multiprocessing

    from spark_jobs.activation.destinations import Credentials

    destination = next(d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml") if d.type == kind)
    if concurrency is not None:
        options["concurrency"] = concurrency
    destination = replace(destination, options={**destination.options, **options})
    limit, per = LIMITS[kind]
    token = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if kind == "webhook" else "bench-token"
    ready = multiprocessing.Queue()
    process = multiprocessing.Process(target=_serve, args=(kind, token, (limit, per), ready), daemon=True)
    process.start()
    url = ready.get(timeout=30)
    key = "user_id" if destination.match_key == "user_id" else "email"
    calls = [SimpleNamespace(key=f"u-{i}" if key == "user_id" else f"p{i}@example.com", record_id=None,
                             fields_json='{"segment": "High Intent"}') for i in range(rows)]  # fmt: skip
    batches = [calls[start : start + destination.batch_size] for start in range(0, rows, destination.batch_size)]
    try:
        adapter = ADAPTERS[kind](destination, Credentials(token, url), RetryPolicy())
        started = time.perf_counter()
        refused = 0
        # the sync's own sending loop: its batches, its concurrency, the adapter's limiter and retries
        for _, outcome in in_flight(adapter, destination, batches, "upsert", destination.concurrency):
            refused += len(outcome.rejected)
        seconds = time.perf_counter() - started
        stats = adapter.http.stats
        adapter.http.close()
    finally:
        process.kill()
        process.join()
    allowed_rps = limit / per
    calls_per_batch = (stats.requests - stats.retries) / len(batches)
    batch = min(rows, destination.batch_size)
    return {
        "type": kind, "rows": rows, "batch_size": destination.batch_size, "seconds": seconds,
        "requests": stats.requests, "throttled": stats.throttled, "refused": refused,
        "requests_per_s": stats.requests / seconds, "limit_per_s": allowed_rps,
        "share_of_limit": stats.requests / seconds / allowed_rps, "rows_per_s": rows / seconds,
        "max_rows_per_s": allowed_rps * batch / calls_per_batch, "concurrency": destination.concurrency,
    }  # fmt: skip


def _diff_lakehouse(spark, settings: Settings, persons: int) -> None:
    from pyspark.sql import functions as F

    from spark_jobs.contracts import ensure_tables, table_contract

    ensure_tables(spark, settings)
    now = F.lit(datetime(2026, 11, 3, 12)).cast("timestamp")
    ids = spark.range(persons).withColumn("person_id", F.format_string("p%09d", "id"))
    segment = F.element_at(F.array(*[F.lit(s) for s in ("High Intent", "Standard", "Price Sensitive")]),
                           (F.col("id") % 3 + 1).cast("int"))  # fmt: skip

    def write(name, frame):
        columns = table_contract(name).schema()
        frame = frame.select(*[F.col(f.name).cast(f.dataType) for f in columns.fields])
        frame.write.format("delta").mode("overwrite").save(str(settings.table_path(name)))

    write("gold.user_segments", ids.select("person_id", segment.alias("segment"),
          (F.col("id") % 100).cast("double").alias("intent_score"), F.concat(F.lit("s-"), "person_id").alias(
              "session_id"), now.alias("last_seen_at"), F.lit(2).alias("sessions"),
          F.lit("rules-v1").alias("model_version")))  # fmt: skip
    write("gold.session_scores", ids.select(F.concat(F.lit("s-"), "person_id").alias("session_id"), "person_id",
          now.alias("session_start"), now.alias("session_end"), F.lit(True).alias("is_closed"),
          (F.col("id") % 100).cast("double").alias("intent_score"),
          F.create_map(F.lit("cart_add"), F.lit(40.0), F.lit("dwell"), (F.col("id") % 7).cast("double"),
                       F.lit("search"), F.lit(5.0)).alias("contributions"),
          F.lit("rules-v1").alias("model_version"), segment.alias("segment"),
          F.to_date(now).alias("session_date")))  # fmt: skip
    write("gold.send_times", ids.select("person_id", (F.col("id") % 24).cast("int").alias("best_local_hour"),
          F.lit("Europe/Paris").alias("timezone"), F.lit("person").alias("source"), F.lit(0.5).alias("confidence"),
          F.lit(2).alias("sessions"), segment.alias("segment"), now.alias("window_end")))  # fmt: skip
    write("silver.profiles", ids.select("person_id", F.concat(F.lit("u-"), "id").alias("user_id"),
          F.concat("person_id", F.lit("@example.com")).alias("email"), F.lit(None).alias("phone"),
          F.lit(True).alias("consent_analytics"), F.lit(True).alias("consent_marketing"),
          F.lit(True).alias("consent_personalization"), now.alias("consent_updated_at"),
          F.lit("segment").alias("consent_source"), now.alias("updated_at")))  # fmt: skip


def bench_diff(persons: int, changed: float) -> dict:
    import duckdb
    from deltalake import DeltaTable as ReadOnly
    from pyspark.sql import functions as F

    from spark_jobs.activation.sync import audience, changes, sync
    from spark_jobs.contracts import read_table, table_version
    from spark_jobs.spark import build_spark

    work = Path(tempfile.mkdtemp(prefix="intentlake-bench-sync-"))
    settings = Settings.from_env().with_root(work / "lakehouse")
    spark = build_spark(settings, app_name="bench-sync")
    destination = replace(
        next(d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml") if d.type == "hubspot"),
        segments=("High Intent", "Standard", "Price Sensitive"),
    )
    t0 = time.perf_counter()
    _diff_lakehouse(spark, settings, persons)
    # the state: what a previous sync acknowledged, for everyone, at the current fields
    version = table_version(spark, settings, "gold.user_segments")
    acknowledged = audience(spark, settings, destination, version).select(
        F.lit(destination.name).alias("destination"), "person_id", "match_value", F.lit(None).cast("string").alias(
            "record_id"), "payload_hash", F.lit(True).alias("in_audience"), "segment",
        F.lit(version).cast("bigint").alias("gold_version"), F.current_timestamp().alias("synced_at"))  # fmt: skip
    acknowledged.write.format("delta").mode("overwrite").save(str(settings.table_path("ops.sync_state")))
    # then `changed` of them get a new score (a gold MERGE would do the same)
    from delta.tables import DeltaTable

    every = max(1, round(1 / changed))
    DeltaTable.forPath(spark, str(settings.table_path("gold.user_segments"))).update(
        F.expr(f"cast(substr(person_id, 2) AS BIGINT) % {every} = 0"), {"intent_score": F.expr("intent_score + 0.5")}
    )
    setup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    dry = sync(spark, settings, destination, mode="dry_run")
    dry_s = time.perf_counter() - t0
    desired = audience(spark, settings, destination, table_version(spark, settings, "gold.user_segments"))
    desired = desired.localCheckpoint(eager=True)
    state = read_table(spark, settings, "ops.sync_state")
    refused = read_table(spark, settings, "ops.sync_rejections")
    t0 = time.perf_counter()
    spark_changes = changes(desired, state, refused).count()
    changes_s = time.perf_counter() - t0

    # reference: DuckDB, the same diff over the same materialised audience and state
    audience_arrow = desired.select("person_id", "match_value", "payload_hash").toArrow()
    state_arrow = ReadOnly(str(settings.table_path("ops.sync_state"))).to_pyarrow_table(
        columns=["person_id", "match_value", "payload_hash", "in_audience"]
    )
    con = duckdb.connect()
    con.register("desired", audience_arrow)
    con.register("held", state_arrow)
    t0 = time.perf_counter()
    duck_changes = con.execute(
        """SELECT count(*) FROM desired d FULL OUTER JOIN held h USING (person_id)
           WHERE (d.person_id IS NOT NULL AND (h.person_id IS NULL OR NOT h.in_audience
                                               OR h.payload_hash <> d.payload_hash))
              OR (h.in_audience AND (d.person_id IS NULL OR h.match_value <> d.match_value))"""
    ).fetchone()[0]
    duck_s = time.perf_counter() - t0
    spark.stop()
    return {
        "persons": persons, "changed_share": changed, "setup_s": setup_s, "dry_run_s": dry_s,
        "dry_run_audience": dry.audience, "dry_run_calls": dry.upserts + dry.removals, "changes_s": changes_s,
        "changes_rows": spark_changes, "duckdb_s": duck_s, "duckdb_rows": duck_changes,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persons", type=int, default=1_000_000, help="persons in the diff lakehouse")
    parser.add_argument("--changed", type=float, default=0.01, help="share of them changed since the last sync")
    parser.add_argument("--skip-rate", action="store_true", help="skip the rate-limit runs")
    parser.add_argument("--skip-diff", action="store_true", help="skip the diff run")
    args = parser.parse_args()
    if not args.skip_rate:
        print("| destination | rows | batch | in flight | requests | 429s | req/s | limit req/s | share of limit | "
              "rows/s | most rows/s at the limit |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        runs = [("hubspot", None, {}), ("braze", 1, {}), ("braze", None, {}), ("mailchimp", None, {}),
                ("mailchimp", None, {"tag_id": "7001"}), ("webhook", None, {})]  # fmt: skip
        for kind, concurrency, options in runs:
            rows = 5_000 if options.get("tag_id") else ROWS[kind]
            r = bench_rate(kind, rows, concurrency, **options)
            label = kind + "".join(f" ({k} {v})" for k, v in options.items())
            print(f"| {label} | {r['rows']:,} | {r['batch_size']} | {r['concurrency']} | {r['requests']:,} | "
                  f"{r['throttled']} | "
                  f"{r['requests_per_s']:,.1f} | {r['limit_per_s']:,.0f} | {100 * r['share_of_limit']:.1f} % | "
                  f"{r['rows_per_s']:,.0f} | {r['max_rows_per_s']:,.0f} |", flush=True)  # fmt: skip
    if not args.skip_diff:
        r = bench_diff(args.persons, args.changed)
        print(f"\ndiff of {r['persons']:,} persons, {100 * r['changed_share']:.1f} % changed "
              f"(lakehouse built in {r['setup_s']:.1f} s):")  # fmt: skip
        print(f"  sync --dry-run (audience joins + diff + counts): {r['dry_run_s']:.1f} s, audience "
              f"{r['dry_run_audience']:,}, {r['dry_run_calls']:,} calls to make")  # fmt: skip
        print(f"  changes() over the materialised audience: {r['changes_s']:.1f} s ({r['changes_rows']:,} calls)")
        print(f"  DuckDB, the same diff: {r['duckdb_s']:.2f} s ({r['duckdb_rows']:,} calls); "
              f"ratio Spark/DuckDB {r['changes_s'] / max(r['duckdb_s'], 1e-9):.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
