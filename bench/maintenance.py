"""Maintenance: how long VACUUM takes on a small table, with the session's file-listing parallelism and with
Spark's default.

    .venv/bin/python bench/maintenance.py [--tables 3] [--versions 6]

VACUUM lists the table's directory with a Spark job of `spark.sql.sources.parallelPartitionDiscovery.parallelism`
tasks (Spark's default: 10,000). On a small machine in local mode those tasks, not the files, are the cost:
the lakehouse_maintenance DAG vacuums every table, and erasure purges every table it touched. build_spark
sets the parallelism from INTENTLAKE_SHUFFLE_PARTITIONS on local masters; the reference is the same VACUUM
with the default. Each table gets `versions` overwrites (old files to delete), and VACUUM RETAIN 0 HOURS
deletes them; both ways vacuum their own copy of the same tables in the same run, so the ratio compares
like with like.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from delta.tables import DeltaTable

from spark_jobs.settings import Settings
from spark_jobs.spark import build_spark

KEY = "spark.sql.sources.parallelPartitionDiscovery.parallelism"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=3)
    parser.add_argument("--versions", type=int, default=6)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="intentlake-bench-maintenance-"))
    try:
        settings = Settings.from_env().with_root(root / "lakehouse")
        spark = build_spark(settings, app_name="bench-maintenance")
        spark.conf.set("spark.databricks.delta.retentionDurationCheck.enabled", "false")
        configured = spark.conf.get(KEY)
        source = root / "source"
        for t in range(args.tables):
            for v in range(args.versions):
                spark.range(1000 * (v + 1)).write.format("delta").mode("overwrite").save(str(source / f"t{t}"))
        seconds = {}
        # the reference first: whichever runs first pays the JVM's warm-up, which favours the figure under test
        for label, parallelism in (("default", "10000"), ("configured", configured)):
            copy = root / label
            shutil.copytree(source, copy)
            spark.conf.set(KEY, parallelism)
            start = time.perf_counter()
            for t in range(args.tables):
                DeltaTable.forPath(spark, str(copy / f"t{t}")).vacuum(0)
            seconds[label] = time.perf_counter() - start
        print(f"VACUUM of {args.tables} tables x {args.versions} versions (RETAIN 0 HOURS)")
        print(f"  listing parallelism {configured:>6}: {seconds['configured']:7.1f} s")
        print(f"  Spark default 10000      : {seconds['default']:7.1f} s")
        print(f"  ratio default / configured: {seconds['default'] / seconds['configured']:.1f}x")
        spark.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
