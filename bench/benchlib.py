"""What the benchmarks share: directory sizes, a job's run records, percentiles."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from spark_jobs.settings import Settings


def dir_size(path: Path) -> tuple[int, int]:
    """(bytes, files) under a directory."""
    files = [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def job_runs(spark: SparkSession, settings: Settings, job: str) -> list:
    """A job's ops.pipeline_runs rows, by batch id."""
    runs = spark.read.format("delta").load(str(settings.table_path("ops.pipeline_runs")))
    return runs.filter(F.col("job") == job).orderBy("batch_id").collect()


def phase_seconds(runs: list) -> list[tuple[str, float]]:
    """(phase, seconds) summed over ops.pipeline_runs rows from every `<phase>_ms` detail, largest first (other
    details, such as counts, are not phases)."""
    totals: dict[str, int] = {}
    for r in runs:
        for key, value in (r.details or {}).items():
            if key.endswith("_ms"):
                totals[key.removesuffix("_ms")] = totals.get(key.removesuffix("_ms"), 0) + int(value)
    return [(name, ms / 1000) for name, ms in sorted(totals.items(), key=lambda kv: -kv[1])]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
