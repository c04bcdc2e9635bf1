"""Build the one Spark session every job, test and CLI command uses; run table operations a few at a time."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from pyspark.sql import SparkSession

from spark_jobs.settings import Settings

T = TypeVar("T")


class MissingJarsError(RuntimeError):
    """The Delta / Kafka jars have not been resolved into the local cache yet."""


def cached_jars(jars_dir: Path) -> list[str]:
    jars = sorted(str(p) for p in jars_dir.glob("*.jar"))
    if not any("delta-spark" in Path(j).name for j in jars):
        raise MissingJarsError(
            f"no Delta jar in {jars_dir}. Run `make jars` (or `python scripts/resolve_jars.py`) once to "
            "resolve Delta and the Kafka connector from Maven Central into that cache."
        )
    return jars


def build_spark(settings: Settings, app_name: str = "intentlake") -> SparkSession:
    """A Delta-enabled session: `local[*]` by default, or the master and confs from settings.

    Jars come from the local cache (`make jars`), never resolved at start-up. Defaults suit a small
    machine: few shuffle partitions, UI off unless asked for, UTC session time zone.
    """
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars", ",".join(cached_jars(settings.jars_dir)))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.default.parallelism", str(settings.shuffle_partitions))
        .config("spark.ui.enabled", str(settings.spark_ui).lower())
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(settings.lakehouse / "_catalog"))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        .config("spark.driver.memory", "4g")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if not settings.codegen:
        # expressions interpreted, not compiled: per-query Java compiling is the largest single cost of a
        # small batch's hundreds of queries (factoryMode is the switch Spark's own tests use for this)
        builder = builder.config("spark.sql.codegen.wholeStage", "false").config(
            "spark.sql.codegen.factoryMode", "NO_CODEGEN"
        )
    if settings.spark_master.startswith("local"):
        # Python workers must run this interpreter (the venv with pyarrow and spark_jobs), on loopback.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (
            builder.config("spark.driver.host", "127.0.0.1")
            # Delta rebuilds table state (e.g. to look up txnAppId for idempotent writes) with a Spark
            # job of 50 partitions by default: ~5 s per write on 2 cores, ~1 s with 2.
            .config("spark.databricks.delta.snapshotPartitions", "2")
            # VACUUM lists a table's files with a job of this many tasks (default 10,000): a minute per
            # table on 2 cores, seconds with a few (bench/maintenance.py measures it)
            .config(
                "spark.sql.sources.parallelPartitionDiscovery.parallelism", str(max(settings.shuffle_partitions, 2))
            )
            .config("spark.driver.bindAddress", "127.0.0.1")
        )
    for key, value in settings.spark_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def each_table(work: Callable[[str], T], tables: Iterable[str], workers: int = 4) -> list[T]:
    """`work(table)` for each table, up to `workers` at once, results in the tables' order.

    Delta tables are independent logs and most of a small table operation (log replay, commit, listing) is
    driver-side waiting, so a few at a time finish about twice as fast on a small machine. The first error
    is raised once the others have finished; each call must be safe to run beside the others.
    """
    from concurrent.futures import ThreadPoolExecutor

    names = list(tables)
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(names)), thread_name_prefix="each-table") as pool:
        return list(pool.map(work, names))


def alongside(*calls: Callable[[], T]) -> list[T]:
    """Run independent parts of one batch at once (each a call without arguments), results in their order.

    A batch's parts that read and write different tables (silver's identity graph and its sessionizer; the
    sessions MERGE and the micro-moments build) spend most of their time in driver-side work and small Spark
    jobs, so two at a time overlap a little on a small machine (bench/README.md). Every call runs to its end
    before an error is raised (the first in the calls' order, with the others' noted on it), so nothing is
    left writing behind a failed batch. The side threads do not carry a stream's job group: stopping a query
    waits for them to finish instead of cancelling their jobs.
    """
    from concurrent.futures import ThreadPoolExecutor

    if len(calls) < 2:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls) - 1, thread_name_prefix="alongside") as pool:
        futures = [pool.submit(call) for call in calls[1:]]
        try:
            first = calls[0]()
        except BaseException as exc:
            for error in filter(None, (future.exception() for future in futures)):  # waits for each
                exc.add_note(f"and beside it: {type(error).__name__}: {error}")
            raise
        errors = [error for error in (future.exception() for future in futures) if error is not None]
        if errors:
            for error in errors[1:]:
                errors[0].add_note(f"and beside it: {type(error).__name__}: {error}")
            raise errors[0]
        return [first, *(future.result() for future in futures)]
