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


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-quantile (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
