"""Table maintenance: OPTIMIZE (compaction, Z-order where reads filter on a key) and VACUUM.

Streaming micro-batches write many small files; OPTIMIZE rewrites them into few large ones (a new table
version with the same rows, so readers and time travel are unaffected). Z-ordering clusters rows by the
columns lookups filter on: silver's per-device recompute reads bronze.events and silver.sessions by
anonymous_id, and gold's per-person rescoring reads silver.sessions and gold.session_scores by person_id.

VACUUM deletes files no version within the retention still needs. The retention has a floor
(MIN_RETENTION_HOURS, 7 days, Delta's own default): below it, a stream restarting from an older
checkpoint, a long query or a time-travel read could lose files it needs.

Raw IPs expire: `expire_ips` cuts bronze.events' context.ip to its /24 (IPv4) or /48 (IPv6) network on rows
older than INTENTLAKE_IP_RETENTION_DAYS (spark_jobs/privacy.py), enough for silver's IP time-zone lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession

from spark_jobs.locks import exclusive_lock
from spark_jobs.settings import Settings
from spark_jobs.spark import each_table

MIN_RETENTION_HOURS = 168
ZORDER = {
    "bronze.events": ("anonymous_id",),
    "silver.sessions": ("person_id", "anonymous_id"),
    "gold.session_scores": ("person_id",),
}


class MaintenanceError(ValueError):
    """A maintenance request that would be unsafe; the message says why."""


@dataclass(frozen=True)
class Optimized:
    table: str
    files_removed: int
    files_added: int
    zorder_by: tuple[str, ...]


def optimize(spark: SparkSession, settings: Settings, table: str) -> Optimized:
    """Compact the table's small files (Z-ordered by ZORDER's columns where listed), holding the lakehouse
    lock alone so no streaming MERGE commits in between (spark_jobs/locks.py)."""
    with exclusive_lock(settings.lock_dir, settings.lock_timeout_seconds, f"OPTIMIZE {table}"):
        return _optimize(spark, settings, table)


def _optimize(spark: SparkSession, settings: Settings, table: str) -> Optimized:
    from delta.tables import DeltaTable

    location = str(settings.table_path(table))
    columns = ZORDER.get(table, ())
    if columns and not _has_small_files(spark, location):
        return Optimized(table, 0, 0, columns)  # Z-ordering rewrites every file, even already-optimized ones
    builder = DeltaTable.forPath(spark, location).optimize()
    result = builder.executeZOrderBy(*columns) if columns else builder.executeCompaction()
    metrics = result.first().metrics
    return Optimized(table, int(metrics.numFilesRemoved), int(metrics.numFilesAdded), columns)


def _has_small_files(spark: SparkSession, location: str) -> bool:
    """Whether some partition holds more than one data file (the current version's)."""
    from collections import Counter

    files = spark.read.format("delta").load(location).inputFiles()
    return any(n > 1 for n in Counter(f.rsplit("/", 1)[0] for f in files).values())


def vacuum(spark: SparkSession, settings: Settings, table: str, retention_hours: float = MIN_RETENTION_HOURS) -> int:
    """Delete files older than the retention that no retained version references; returns files deleted.
    Holds the lakehouse lock alone (no batch reads a file while it goes)."""
    with exclusive_lock(settings.lock_dir, settings.lock_timeout_seconds, f"VACUUM {table}"):
        return _vacuum(spark, settings, table, retention_hours)


def _vacuum(spark: SparkSession, settings: Settings, table: str, retention_hours: float) -> int:
    from delta.tables import DeltaTable

    if retention_hours < MIN_RETENTION_HOURS:
        raise MaintenanceError(
            f"VACUUM {table} with {retention_hours:g} h retention: below the {MIN_RETENTION_HOURS} h floor, streams "
            "restarting from older checkpoints and time-travel reads could lose files they need"
        )
    location = settings.table_path(table)
    before = {p for p in location.rglob("*.parquet")}
    DeltaTable.forPath(spark, str(location)).vacuum(float(retention_hours))
    return len(before - {p for p in location.rglob("*.parquet")})


def purge(spark: SparkSession, settings: Settings, tables: Sequence[str], retention_hours: float) -> int:
    """VACUUM for erasures: like `vacuum`, but a retention below the floor is allowed (Delta's safety check is
    lifted for these calls only) because erased rows must not outlive their purge deadline in old versions.
    Below the floor only run it with the pipeline paused. The tables are vacuumed a few at a time; returns
    the data files deleted. The caller holds the lakehouse lock (erasure does)."""
    from delta.tables import DeltaTable

    if retention_hours >= MIN_RETENTION_HOURS:
        return sum(each_table(lambda table: _vacuum(spark, settings, table, retention_hours), tables))

    def one(table: str) -> int:
        location = settings.table_path(table)
        files = {p for p in location.rglob("*.parquet")}
        DeltaTable.forPath(spark, str(location)).vacuum(float(retention_hours))
        return len(files - {p for p in location.rglob("*.parquet")})

    key = "spark.databricks.delta.retentionDurationCheck.enabled"  # a session setting: set once around all
    before = spark.conf.get(key, "true")
    spark.conf.set(key, "false")
    try:
        return sum(each_table(one, tables))
    finally:
        spark.conf.set(key, before)


def expire_ips(spark: SparkSession, settings: Settings, now: datetime) -> int:
    """Cut context.ip to its network (IPv4 /24, IPv6 /48) on bronze.events rows whose event_date is more than
    INTENTLAKE_IP_RETENTION_DAYS before `now`'s UTC date (0: every row); returns the rows changed.

    One Delta UPDATE, on rows whose IP is not cut yet: a second run matches nothing and commits no version.
    Text in context.ip that is no IP address becomes null. The whole IPs stay in the table's older versions
    until VACUUM deletes their files (the maintenance DAG's vacuum, 7 days on) and in the min/max statistics
    of the Delta log until its retention (30 days for bronze.events) expires them.
    """
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    from spark_jobs.contracts import ensure_tables
    from spark_jobs.privacy import is_truncated_ip_column, truncate_ip_column

    ensure_tables(spark, settings, ("bronze.events",))
    table = DeltaTable.forPath(spark, str(settings.table_path("bronze.events")))
    ip = F.col("context.ip")
    condition = ~is_truncated_ip_column(ip)
    if settings.ip_retention_days:
        day = (now.astimezone(UTC) if now.tzinfo else now).date()
        condition = (F.col("event_date") < F.lit(day - timedelta(days=settings.ip_retention_days))) & condition
    before = table.history(1).first().version
    table.update(condition, {"context.ip": truncate_ip_column(ip)})
    since = table.history(100).where(f"version > {before}")  # this UPDATE, and bronze appends meanwhile
    commits = since.where("operation = 'UPDATE'").collect()
    return sum(int(c.operationMetrics.get("numUpdatedRows", 0)) for c in commits)
