"""One micro-batch of about 1,000 events through bronze, silver and gold on a warm lakehouse: what it costs.

    .venv/bin/python bench/batch_phases.py [--events 1000] [--history 3000]

A lakehouse is built first from `--history` simulated events (one day) through the three layers, which also
warms the session up (JVM, Python workers, Delta logs). Then one landing file of `--events` events of the next
day arrives and each layer takes it in one availableNow micro-batch (`intentlake run all`'s code path: the
same streams, checkpoints, gates and run records). Printed per layer: wall seconds (stream start to stop),
the Spark jobs it ran (from the Spark UI's REST API) and the seconds inside them, and its largest phases
(ops.pipeline_runs.details); then the reference from the same session: Spark reading the same file as JSON
and appending it to a Delta table (the I/O floor of any design), and the ratio.

Issue 19's target: a 1,000-event batch through all three layers in at most 3 s of wall time on this machine.
Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _jobs(spark) -> list[dict]:
    """Every finished Spark job of this application (id, submission and completion time in epoch seconds)."""
    ui, app = spark.sparkContext.uiWebUrl, spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{ui}/api/v1/applications/{app}/jobs") as answer:
        jobs = json.load(answer)

    def epoch(text: str) -> float:
        return datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()

    return [
        {"id": j["jobId"], "start": epoch(j["submissionTime"]), "end": epoch(j["completionTime"])}
        for j in jobs
        if "completionTime" in j
    ]


def _within(jobs: list[dict], start: float, end: float) -> tuple[int, float]:
    inside = [j for j in jobs if start <= j["start"] and j["end"] <= end]
    return len(inside), sum(j["end"] - j["start"] for j in inside)


def run(root: Path, events: int, history: int) -> dict:
    from benchlib import job_runs, phase_seconds  # bench/benchlib.py (scripts run as files: bench/ is on the path)

    from spark_jobs.bronze import job as bronze
    from spark_jobs.gold import job as gold
    from spark_jobs.settings import Settings
    from spark_jobs.silver import job as silver
    from spark_jobs.simulate import simulate
    from spark_jobs.spark import build_spark

    settings = replace(Settings.from_env().with_root(root / "lakehouse"), shuffle_partitions=2, spark_ui=True)
    spark = build_spark(settings, app_name="intentlake-bench-batch")
    layers = (("bronze", bronze), ("silver", silver), ("gold", gold))
    simulate(settings.landing, settings.truth, events=history, seed=5, day=date(2026, 11, 2), lines_per_file=history)
    for _, job in layers:
        job.run(spark, settings)
    batches = {name: len(job_runs(spark, settings, name)) for name, _ in layers}

    staging = root / "staging"
    simulate(staging, root / "truth", events=events, seed=6, day=date(2026, 11, 3), lines_per_file=10 * events)
    [new_file] = sorted(p for p in staging.rglob("*") if p.is_file())
    lines = len(new_file.read_bytes().splitlines())
    arrived = settings.landing / f"batch-{new_file.name}"
    shutil.copy(new_file, arrived)

    spans = {}
    for name, job in layers:
        t0 = time.time()
        job.run(spark, settings)
        spans[name] = (t0, time.time())
    jobs = _jobs(spark)
    result: dict = {"events": lines, "layers": {}}
    for name, _ in layers:
        runs = job_runs(spark, settings, name)[batches[name] :]
        count, in_jobs = _within(jobs, *spans[name])
        result["layers"][name] = {
            "seconds": round(spans[name][1] - spans[name][0], 2),
            "batches": len(runs),
            "input_rows": sum(r.input_rows for r in runs),
            "spark_jobs": count,
            "seconds_in_jobs": round(in_jobs, 2),
            "phases": [(phase, round(s, 2)) for phase, s in phase_seconds(runs)[:6]],
        }

    # the reference: the same file read as JSON and appended to a Delta table, in the same warm session
    t0 = time.time()
    frame = spark.read.json(str(arrived))
    frame.write.format("delta").mode("append").save(str(root / "floor"))
    t1 = time.time()
    count, in_jobs = _within(_jobs(spark), t0, t1)
    result["floor"] = {"seconds": round(t1 - t0, 2), "spark_jobs": count, "seconds_in_jobs": round(in_jobs, 2)}
    spark.stop()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--history", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="intentlake-batch-") as tmp:
        result = run(Path(tmp), args.events, args.history)
    layers = result["layers"]
    total = sum(layer["seconds"] for layer in layers.values())
    print(f"one landing file of {result['events']} lines through the three layers on a warm lakehouse")
    print("| layer | micro-batches | input rows | wall s | Spark jobs | s inside jobs | largest phases (s) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, layer in layers.items():
        phases = ", ".join(f"{phase} {s:.2f}" for phase, s in layer["phases"])
        print(f"| {name} | {layer['batches']} | {layer['input_rows']:,} | {layer['seconds']:.2f} | "
              f"{layer['spark_jobs']} | {layer['seconds_in_jobs']:.2f} | {phases} |")  # fmt: skip
    floor = result["floor"]
    print(f"| all three | | | {total:.2f} | {sum(x['spark_jobs'] for x in layers.values())} | | |")
    print(f"| reference: JSON read + one Delta append | | | {floor['seconds']:.2f} | {floor['spark_jobs']} | "
          f"{floor['seconds_in_jobs']:.2f} | |")  # fmt: skip
    print(f"ratio (three layers / reference): {total / floor['seconds']:.1f}x; target: three layers <= 3 s")
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
