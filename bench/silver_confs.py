"""Spark and Delta settings against silver's per-batch cost: the same input through bronze, silver and gold
once per setting, each in a fresh process, next to the shipped settings in the same run.

    .venv/bin/python bench/silver_confs.py [--variants default,dv,no-aqe,no-materialize,checkpoint-100]

Input: 600 simulated events in 6 landing files, bronze two files per batch, silver one bronze data file per
micro-batch (12 batches here), then one gold batch: the shape of the suite's stream tests. Every process
warms up first (JVM, Python workers) on another small lakehouse. Printed per variant: the seconds of each
layer, silver's mean batch and its largest phases (ops.pipeline_runs.details), and the ratio of silver's
time to the shipped settings' (`default`). Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

VARIANTS = {
    "default": "",
    "dv": "spark.databricks.delta.properties.defaults.enableDeletionVectors=true",
    "no-aqe": "spark.sql.adaptive.enabled=false",
    "no-materialize": "spark.databricks.delta.merge.materializeSource=none",
    "checkpoint-100": "spark.databricks.delta.properties.defaults.checkpointInterval=100",
    "neighbourhood-identity": "",
}
# variants that are intentlake settings, not Spark confs: the environment the child runs with
SETTINGS = {"neighbourhood-identity": {"INTENTLAKE_IDENTITY_COLLECT_MAX_EDGES": "0"}}


def one_run(root: Path) -> dict:
    """In the child process: the pipeline once, under `root`, on the settings from the environment."""
    from benchlib import job_runs, phase_seconds  # bench/benchlib.py (scripts run as files: bench/ is on the path)

    from spark_jobs.bronze import job as bronze
    from spark_jobs.gold import job as gold
    from spark_jobs.settings import Settings
    from spark_jobs.silver import job as silver
    from spark_jobs.simulate import simulate
    from spark_jobs.spark import build_spark

    warm = replace(Settings.from_env().with_root(root / "warm-up"), shuffle_partitions=2)
    spark = build_spark(warm, app_name="intentlake-bench-confs")
    simulate(warm.landing, warm.truth, events=300, seed=1, lines_per_file=300)
    for job in (bronze, silver, gold):
        job.run(spark, warm)
    settings = replace(
        Settings.from_env().with_root(root / "run"),
        shuffle_partitions=2,
        max_files_per_trigger=2,
        silver_max_files_per_trigger=1,
        hash_key="bench-silver-confs-hash-key-0123456789",
    )
    simulate(settings.landing, settings.truth, events=600, seed=11, lines_per_file=100)
    seconds = {}
    for name, job in (("bronze", bronze), ("silver", silver), ("gold", gold)):
        t0 = time.monotonic()
        job.run(spark, settings)
        seconds[name] = time.monotonic() - t0
    runs = job_runs(spark, settings, "silver")
    spark.stop()
    return {"seconds": seconds, "silver_batches": len(runs), "phases": phase_seconds(runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory(prefix="intentlake-confs-") as tmp:
            print("RESULT " + json.dumps(one_run(Path(tmp))))
        return 0
    names = ["default", *(v for v in args.variants.split(",") if v and v != "default")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    print(f"silver per-batch cost by Spark/Delta setting on {os.cpu_count()} cores (one fresh process each)")
    results = {}
    for name in names:
        env = os.environ | {"INTENTLAKE_SPARK_CONF": VARIANTS[name]} | SETTINGS.get(name, {})
        done = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if done.returncode or line is None:
            print(f"  {name}: failed\n{done.stderr[-2000:]}")
            return 1
        r = results[name] = json.loads(line.removeprefix("RESULT "))
        s, n = r["seconds"], r["silver_batches"]
        top = ", ".join(f"{name} {spent_s:.1f}s" for name, spent_s in r["phases"][:4])
        ratio = s["silver"] / results["default"]["seconds"]["silver"]
        print(f"  {name:<15} {VARIANTS[name] or SETTINGS.get(name) or '(shipped settings)'}\n"
              f"  {'':<15} bronze {s['bronze']:.1f}s, silver {s['silver']:.1f}s ({n} batches, "
              f"{s['silver'] / n:.1f}s each), gold {s['gold']:.1f}s; "
              f"silver {ratio:.2f}x the shipped settings; largest phases: {top}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
