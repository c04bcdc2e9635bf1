"""Identity resolution at scale: the plan of one batch's neighbourhood beside the whole graph's plan.

    .venv/bin/python bench/identity_scale.py --persons 200000 [--batch-devices 1000] [--root DIR]

A synthetic identity graph is written straight to silver.identity_edges: person i has 1 + i % 4 devices, a
login when i is even, one fingerprint shared by all of its devices (so its devices are joined by
fingerprint), and every tenth person's devices sit behind one of seven IP + user agent values (a NAT: too
common to link anyone, and followed by the neighbourhood to every device joined by a fingerprint). The
whole graph is resolved once to write silver.identity_map. Then, each in a fresh process so that its peak
driver memory is its own:

- the reference: `plan_identities` over the whole graph (everything collected to the driver), and
- `plan_identities(devices=...)` for a batch of `--batch-devices` devices (the neighbourhood only), twice
  (the first pays the session's warm-up).

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
    from pyspark.sql import functions as F

    from spark_jobs.contracts import ensure_tables
    from spark_jobs.silver.identity import IDENTITY_TABLES, plan_identities, write_identities

    spark, settings = _session(root)
    ensure_tables(spark, settings, IDENTITY_TABLES)
    people = spark.range(persons).withColumnRenamed("id", "i")
    devices = people.select("i", F.explode(F.sequence(F.lit(0), F.col("i") % 4)).alias("k")).select(
        "i", F.concat(F.lit("d"), F.col("i"), F.lit("-"), F.col("k")).alias("anonymous_id")
    )

    def evidence(frame, kind: str, value):
        return frame.select("anonymous_id", "i", F.lit(kind).alias("identifier_type"), value.alias("identifier"))

    rows = (
        evidence(devices, "anonymous_id", F.col("anonymous_id"))
        .unionByName(evidence(devices.where("i % 2 = 0"), "user_id", F.concat(F.lit("u"), F.col("i"))))
        .unionByName(evidence(devices, "fingerprint", F.concat(F.lit("fp"), F.col("i"))))
        .unionByName(evidence(devices.where("i % 10 = 0"), "ip_ua", F.concat(F.lit("nat"), F.col("i") % 7)))
    )
    start = F.lit("2026-11-01 00:00:00").cast("timestamp") + F.make_interval(secs=(F.col("i") % 86400).cast("int"))
    edges = rows.select(
        "anonymous_id", "identifier_type", "identifier", start.alias("first_seen"),
        (start + F.expr("INTERVAL 10 MINUTES")).alias("last_seen"), F.lit(1).cast("long").alias("events"),
    )  # fmt: skip
    edges.write.format("delta").mode("overwrite").save(str(settings.table_path("silver.identity_edges")))
    write_identities(spark, settings, plan_identities(spark, settings))
    identity_map = spark.read.format("delta").load(str(settings.table_path("silver.identity_map")))
    return {
        "persons": identity_map.select("person_id").distinct().count(),
        "identifiers": identity_map.count(),
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
        plan = plan_identities(spark, settings, devices=None if whole else batch).plan
        runs.append(time.perf_counter() - t)
    return {"seconds": [round(s, 2) for s in runs], "peak_mb": round(_peak_mb()), "start_mb": round(started),
            "upserts": len(plan.upserts)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=200_000)
    parser.add_argument("--batch-devices", type=int, default=1000)
    parser.add_argument("--root", type=Path, help="lakehouse folder (default: a temporary one)")
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
        for step in ("generate", "neighbourhood", "whole"):
            command = [sys.executable, __file__, "--step", step, "--root", str(root), "--persons", str(args.persons),
                       "--batch-devices", str(args.batch_devices)]  # fmt: skip
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
                return 1
            results[step] = json.loads(line.removeprefix("RESULT "))
    graph, part, whole = results["generate"], results["neighbourhood"], results["whole"]
    print(f"graph: {graph['persons']:,} persons, {graph['identifiers']:,} identifiers, {graph['edges']:,} edges")
    print("| plan | seconds | driver peak RSS (MB) |\n|---|---|---|")
    print(f"| whole graph (reference) | {whole['seconds'][0]:.1f} | {whole['peak_mb']:,} |")
    print(f"| neighbourhood of {args.batch_devices:,} devices, first / second | "
          f"{part['seconds'][0]:.1f} / {part['seconds'][1]:.1f} | {part['peak_mb']:,} |")  # fmt: skip
    print(f"ratio (whole / neighbourhood, second run): {whole['seconds'][0] / part['seconds'][1]:.1f}x time, "
          f"{whole['peak_mb'] / part['peak_mb']:.1f}x driver memory (both processes start at "
          f"~{part['start_mb']} MB)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
