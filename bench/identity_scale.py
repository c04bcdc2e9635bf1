"""Identity resolution at scale: the plan of one batch's neighbourhood beside the whole graph's plan.

    .venv/bin/python bench/identity_scale.py --persons 200000 [--batch-devices 1000] [--no-whole] [--root DIR]

A synthetic identity graph and its map are written straight to silver.identity_edges and silver.identity_map
by Spark (`_generate`: five identifiers per person; a tenth of the persons behind seven IP + user agents, a NAT
too common to link anyone: the neighbourhood follows it only to devices the map says it attached, none). Then,
each in a fresh process so that its peak driver memory is its own:

- `plan_identities(devices=...)` for a batch of `--batch-devices` devices (the neighbourhood only), twice
  (the first pays the session's warm-up), and
- the reference, unless `--no-whole`: `plan_identities` over the whole graph (everything collected to the
  driver, about 1 KB per edge: beyond a few million edges it does not fit this machine). It also checks the
  generated map: resolving the whole graph must change none of its rows.

Printed: seconds and the peak resident memory of the Python driver process (`ru_maxrss`) of each, and the
ratios. The JVM's heap is Spark's (executors), not the driver's collected state.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _session(root: Path):
    from spark_jobs.settings import Settings
    from spark_jobs.spark import build_spark

    settings = replace(Settings.from_env().with_root(root), shuffle_partitions=4)
    return build_spark(settings), settings


def _generate(root: Path, persons: int) -> dict:
    """The graph and the map resolution gives it, both written by Spark (nothing on the driver): person i has
    1 + i % 4 devices sharing fingerprint fp<i>, two email hashes seen on its first device, a login on every
    device when i is even, and when i % 10 == 1 its devices behind one of seven IP + user agents (a NAT).
    Its anchor is the login (even i) or the first email hash; the login joins its devices (login, 1.0), the
    email hashes join through the first device (email_hash, 0.99) and an odd person's other devices join by
    fingerprint (0.8). The `whole` step checks the map: resolving the whole graph must change no row."""
    from pyspark.sql import functions as F

    from spark_jobs.contracts import ensure_tables, table_contract
    from spark_jobs.privacy import hash_key
    from spark_jobs.silver.identity import IDENTITY_TABLES, person_id_column

    spark, settings = _session(root)
    ensure_tables(spark, settings, IDENTITY_TABLES)
    key = hash_key(settings)
    people = spark.range(persons).withColumnRenamed("id", "i")
    devices = people.select("i", F.explode(F.sequence(F.lit(0), F.col("i") % 4)).alias("k")).select(
        "i", "k", F.concat(F.lit("d"), F.col("i"), F.lit("-"), F.col("k")).alias("anonymous_id")
    )
    first = devices.where("k = 0")
    emails = first.select("i", "anonymous_id", F.explode(F.array(F.lit(0), F.lit(1))).alias("e"))
    email = F.concat(F.lit("e"), F.col("i"), F.lit("-"), F.col("e"))

    def evidence(frame, kind: str, value):
        return frame.select("anonymous_id", "i", F.lit(kind).alias("identifier_type"), value.alias("identifier"))

    rows = (
        evidence(devices, "anonymous_id", F.col("anonymous_id"))
        .unionByName(evidence(devices.where("i % 2 = 0"), "user_id", F.concat(F.lit("u"), F.col("i"))))
        .unionByName(evidence(emails, "email_hash", email))
        .unionByName(evidence(devices, "fingerprint", F.concat(F.lit("fp"), F.col("i"))))
        .unionByName(evidence(devices.where("i % 10 = 1"), "ip_ua", F.concat(F.lit("nat"), F.col("i") % 7)))
    )
    start = F.lit("2026-11-01 00:00:00").cast("timestamp") + F.make_interval(secs=(F.col("i") % 86400).cast("int"))
    end = start + F.expr("INTERVAL 10 MINUTES")
    edges = rows.select(
        "anonymous_id", "identifier_type", "identifier", start.alias("first_seen"), end.alias("last_seen"),
        F.lit(1).cast("long").alias("events"),
    )  # fmt: skip
    edges.write.format("delta").mode("overwrite").save(str(settings.table_path("silver.identity_edges")))

    even = F.col("i") % 2 == 0
    anchor = F.when(even, F.concat(F.lit("u"), F.col("i"))).otherwise(F.concat(F.lit("e"), F.col("i"), F.lit("-0")))
    person = F.when(even, person_id_column("user_id", anchor, key))
    person = person.otherwise(person_id_column("email_hash", anchor, key))

    def member(frame, kind, value, method, confidence, linked_by=None):
        return frame.select(
            F.lit(kind).alias("identifier_type"), value.alias("identifier"), person.alias("person_id"),
            method.alias("method"), confidence.cast("double").alias("confidence"), start.alias("first_seen"),
            end.alias("last_seen"), (F.lit("") if linked_by is None else linked_by).alias("linked_by"),
        )  # fmt: skip

    device_method = F.when(even, F.lit("login")).when(F.col("k") == 0, F.lit("email_hash")).otherwise("fingerprint")
    device_confidence = F.when(even, 1.0).when(F.col("k") == 0, 0.99).otherwise(0.8)
    # an odd person's later devices hang off its first device by the fingerprint they share
    device_linked_by = F.when(~even & (F.col("k") > 0), F.concat(F.lit("fp"), F.col("i"))).otherwise(F.lit(""))
    email_anchor = (~even) & (F.col("e") == 0)
    identity_map = (
        member(devices, "anonymous_id", F.col("anonymous_id"), device_method, device_confidence, device_linked_by)
        .unionByName(member(people.where(even), "user_id", anchor, F.lit("self"), F.lit(1.0)))
        .unionByName(
            member(emails, "email_hash", email, F.when(email_anchor, F.lit("self")).otherwise("email_hash"),
                   F.when(email_anchor, 1.0).otherwise(0.99))
        )
    )  # fmt: skip
    columns = table_contract("silver.identity_map").column_names
    identity_map = identity_map.select(*columns)
    identity_map.write.format("delta").mode("overwrite").save(str(settings.table_path("silver.identity_map")))
    written = spark.read.format("delta").load(str(settings.table_path("silver.identity_map")))
    return {
        "persons": written.select("person_id").distinct().count(),
        "identifiers": written.count(),
        "edges": spark.read.format("delta").load(str(settings.table_path("silver.identity_edges"))).count(),
    }


def _measure(root: Path, persons: int, batch_devices: int, whole: bool) -> dict:
    from pyspark.sql import functions as F

    from spark_jobs.silver.identity import plan_identities

    spark, settings = _session(root)
    started = _peak_mb()
    runs = []
    for _ in range(1 if whole else 2):
        batch = spark.range(batch_devices).select(
            F.concat(F.lit("d"), (F.col("id") * 97) % persons, F.lit("-0")).alias("anonymous_id")
        )
        t = time.perf_counter()
        # the neighbourhood whatever the graph's size (silver collects graphs under identity_collect_max_edges)
        only = replace(settings, identity_collect_max_edges=0)
        plan = plan_identities(spark, only, devices=None if whole else batch).plan
        runs.append(time.perf_counter() - t)
    return {"seconds": [round(s, 2) for s in runs], "peak_mb": round(_peak_mb()), "start_mb": round(started),
            "changes": len(plan.upserts) + len(plan.deletes) + len(plan.merges)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--batch-devices", type=int, default=1000)
    parser.add_argument("--root", type=Path, help="lakehouse folder (default: a temporary one)")
    parser.add_argument("--no-whole", action="store_true", help="skip the whole-graph reference (large graphs)")
    parser.add_argument("--step", choices=("generate", "whole", "neighbourhood"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:  # one measurement in this process
        work = {
            "generate": lambda: _generate(args.root, args.persons),
            "whole": lambda: _measure(args.root, args.persons, args.batch_devices, whole=True),
            "neighbourhood": lambda: _measure(args.root, args.persons, args.batch_devices, whole=False),
        }[args.step]
        print("RESULT " + json.dumps(work()))
        return 0
    with tempfile.TemporaryDirectory(prefix="identity-scale-") as tmp:
        root = args.root or Path(tmp) / "lakehouse"
        results = {}
        for step in ("generate", "neighbourhood", *(() if args.no_whole else ("whole",))):
            command = [sys.executable, __file__, "--step", step, "--root", str(root), "--persons", str(args.persons),
                       "--batch-devices", str(args.batch_devices)]  # fmt: skip
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
                return 1
            results[step] = json.loads(line.removeprefix("RESULT "))
    graph, part, whole = results["generate"], results["neighbourhood"], results.get("whole")
    print(f"graph: {graph['persons']:,} persons, {graph['identifiers']:,} identifiers, {graph['edges']:,} edges")
    print("| plan | seconds | driver peak RSS (MB) | map rows it would change |\n|---|---|---|---|")
    if whole:
        print(f"| whole graph (reference) | {whole['seconds'][0]:.1f} | {whole['peak_mb']:,} | {whole['changes']} |")
    seconds = f"{part['seconds'][0]:.1f} / {part['seconds'][1]:.1f}"
    print(f"| neighbourhood of {args.batch_devices:,} devices, first / second | {seconds} | {part['peak_mb']:,} | "
          f"{part['changes']} |")  # fmt: skip
    print(f"both processes start at ~{part['start_mb']} MB")
    if whole:
        print(f"ratio (whole / neighbourhood, second run): {whole['seconds'][0] / part['seconds'][1]:.1f}x time, "
              f"{whole['peak_mb'] / part['peak_mb']:.1f}x driver memory")  # fmt: skip
    if part["changes"] or (whole and whole["changes"]):
        print("the generated map is not what resolution makes of the generated graph (see _generate)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
