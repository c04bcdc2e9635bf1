"""What the Airflow DAGs (dags/) call: each function is one task, idempotent, and returns a small summary
for XCom (counts, versions, expectation names and keys; never row contents, never secrets).

A layer task runs its job as a catch-up (`availableNow`) from the job's checkpoint. The gate task then
validates the data files the layer's tables added since they last passed (ops.quality_gates; the files
come from the Delta log) with each table's Great Expectations suite. A failure raises QualityGateFailed
naming each failing expectation and the keys of the failing rows, and Airflow does not start the
downstream tasks; the gate's mark does not move, so the next run checks those rows again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# the tables each layer's gate validates (each has expectations/<layer>_<table>.json)
_SILVER = (
    "silver.sessions",
    "silver.micro_moments",
    "silver.identity_map",
    "silver.identity_merges",
    "silver.late_events",
)
GATED = {"bronze": ("bronze.events",), "silver": _SILVER, "gold": ("gold.session_scores", "gold.user_segments")}
KEYS_SHOWN = 20  # failing keys named per expectation in the error (all of them go to the XCom summary)


class QualityGateFailed(RuntimeError):
    """A gated table's new rows failed expectations; the message names them and the failing keys."""

    def __init__(self, layer: str, failures: dict[str, dict[str, list[str]]]) -> None:
        lines = [f"{layer} quality gate failed:"]
        for table, by_expectation in failures.items():
            for expectation, keys in by_expectation.items():
                more = f" (+{len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else ""
                shown = ", ".join(keys[:KEYS_SHOWN]) + more
                lines.append(f"  {table}: {expectation} failed for {len(keys)} rows: {shown}")
        super().__init__("\n".join(lines))
        self.failures = failures


def _spark(settings: Settings) -> SparkSession:
    from spark_jobs.contracts import ensure_tables
    from spark_jobs.spark import build_spark

    spark = build_spark(settings, app_name="intentlake-airflow")
    ensure_tables(spark, settings)
    return spark


def _utc(moment: datetime) -> datetime:
    """A plain UTC datetime (Airflow hands tasks pendulum times; Spark and Delta want datetimes)."""
    return datetime.fromtimestamp(moment.timestamp(), UTC)


def _version(spark: SparkSession, settings: Settings, table: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, str(settings.table_path(table))).history(1).first().version)


def run_layer(layer: str) -> dict[str, Any]:
    """Catch a layer up (availableNow) and say which table versions it produced."""
    from spark_jobs.bronze import job as bronze
    from spark_jobs.gold import scoring as gold
    from spark_jobs.silver import job as silver

    settings = Settings.from_env()  # INTENTLAKE_* from the worker's environment, as the CLI reads them
    spark = _spark(settings)
    before = {t: _version(spark, settings, t) for t in GATED[layer]}
    {"bronze": bronze.run, "silver": silver.run, "gold": gold.run}[layer](spark, settings)
    after = {t: _version(spark, settings, t) for t in GATED[layer]}
    return {"layer": layer, "versions": {t: [before[t], after[t]] for t in GATED[layer]}}


def added_files(location: Path, first: int, last: int) -> set[str]:
    """Data files (relative paths) added by the table's commits first..last, from the Delta log."""
    from urllib.parse import unquote

    files: set[str] = set()
    for version in range(first, last + 1):
        commit = location / "_delta_log" / f"{version:020d}.json"
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                files.add(unquote(action["add"]["path"]))
    return files


def new_rows(spark: SparkSession, settings: Settings, table: str, before: int, after: int) -> DataFrame:
    """The table's rows (as of `after`) that sit in files the commits after `before` wrote."""
    from pyspark.sql import functions as F

    location = settings.table_path(table)
    snapshot = spark.read.format("delta").option("versionAsOf", after).load(str(location))
    try:
        files = sorted(added_files(location, before + 1, after)) if after > before else []
    except FileNotFoundError:  # those commits are past log retention: check the whole snapshot instead
        return snapshot
    if not files:
        return snapshot.limit(0)
    prefix = location.resolve().as_uri().removeprefix("file://")
    relative = F.regexp_replace(F.expr("url_decode(_metadata.file_path)"), r"^file:(//)?", "")
    relative = F.substring(relative, len(prefix) + 2, 10_000)
    wanted = spark.createDataFrame([(f,) for f in files], "_file STRING")
    return snapshot.withColumn("_file", relative).join(F.broadcast(wanted), "_file", "left_semi").drop("_file")


def _passed_versions(spark: SparkSession, settings: Settings) -> dict[str, int]:
    rows = spark.read.format("delta").load(str(settings.table_path("ops.quality_gates"))).collect()
    return {r.table_name: r.passed_version for r in rows}


def _record_pass(spark: SparkSession, settings: Settings, table: str, version: int, rows: int) -> None:
    from datetime import UTC, datetime

    from delta.tables import DeltaTable

    source = spark.createDataFrame(
        [(table, version, rows, datetime.now(UTC))],
        "table_name STRING, passed_version BIGINT, checked_rows BIGINT, passed_at TIMESTAMP",
    )
    (
        DeltaTable.forPath(spark, str(settings.table_path("ops.quality_gates")))
        .alias("t")
        .merge(source.alias("s"), "t.table_name = s.table_name")
        .whenMatchedUpdateAll(condition="s.passed_version > t.passed_version")
        .whenNotMatchedInsertAll()
        .execute()
    )


def quality_gate(layer: str) -> dict[str, Any]:
    """Validate every file the layer's tables added since they last passed (ops.quality_gates) with each
    table's suite, up to the version read now; raise QualityGateFailed naming expectations and keys."""
    from spark_jobs.quality import QualityGate

    settings = Settings.from_env()  # INTENTLAKE_* from the worker's environment, as the CLI reads them
    spark = _spark(settings)
    passed = _passed_versions(spark, settings)
    failures: dict[str, dict[str, list[str]]] = {}
    checked: dict[str, int] = {}
    reached: dict[str, int] = {}
    for table in GATED[layer]:
        before, after = passed.get(table, -1), _version(spark, settings, table)
        rows = new_rows(spark, settings, table, before, after)
        checked[table] = rows.count()
        reached[table] = after
        failed = QualityGate.for_table(table, settings.expectations_dir).failures(rows) if checked[table] else {}
        if failed:
            failures[table] = failed
    if failures:
        raise QualityGateFailed(layer, failures)
    for table in GATED[layer]:
        _record_pass(spark, settings, table, reached[table], checked[table])
    return {"layer": layer, "rows_checked": checked, "passed_versions": reached, "status": "passed"}


def train_challenger(interval_end: datetime) -> dict[str, Any]:
    """Train on the closed sessions up to the day before `interval_end` and register the challenger; the
    version is named after `interval_end`, so a retried run returns what the first attempt registered."""
    from datetime import timedelta

    from spark_jobs.gold.train import train

    settings = Settings.from_env()
    spark = _spark(settings)
    end = _utc(interval_end)
    result = train(spark, settings, now=end, until=end.date() - timedelta(days=1))
    return {
        "version": result.version,
        "training": [str(d) for d in result.training],
        "holdout": [str(d) for d in result.holdout],
        "training_rows": result.training_rows,
        "auc": result.challenger.auc,
        "champion": result.champion_version,
        "champion_auc": result.champion.auc,
    }


def promote_or_keep(version: str) -> dict[str, Any]:
    """Promote `version` if it beats the champion by the configured margin on its held-out days; else keep
    the champion. Either way the decision and the figures are returned (and kept in ops.models)."""
    from spark_jobs.gold import models
    from spark_jobs.gold.train import promote_version

    settings = Settings.from_env()
    spark = _spark(settings)
    champion = models.champion_row(spark, settings)
    if champion is not None and champion.model_version == version:  # a retry after the promotion committed
        return {"decision": "promoted", "champion": version}
    try:
        retired = promote_version(spark, settings, version)
    except models.PromotionRefused as refused:
        return {"decision": "kept", "champion": champion.model_version if champion else None, "why": str(refused)}
    return {"decision": "promoted", "champion": version, "retired": retired}


def optimize_table(table: str) -> dict[str, Any]:
    """OPTIMIZE one table (compaction; Z-order where spark_jobs.maintenance.ZORDER lists columns)."""
    from spark_jobs.maintenance import optimize

    settings = Settings.from_env()
    done = optimize(_spark(settings), settings, table)
    return {"table": table, "files_removed": done.files_removed, "files_added": done.files_added,
            "zorder_by": list(done.zorder_by)}  # fmt: skip


def vacuum_table(table: str) -> dict[str, Any]:
    """VACUUM one table with the safe retention floor (7 days)."""
    from spark_jobs.maintenance import vacuum

    settings = Settings.from_env()
    return {"table": table, "files_deleted": vacuum(_spark(settings), settings, table)}


def kpis_for_day(interval_end: datetime) -> dict[str, Any]:
    """Compute the KPIs of the UTC day before `interval_end` into gold.kpis_daily (that day's rows replaced)."""
    from datetime import timedelta

    from spark_jobs.gold.kpis import run_kpis

    settings = Settings.from_env()
    end = _utc(interval_end)
    done = run_kpis(_spark(settings), settings, end.date() - timedelta(days=1), as_of=end)
    return {"day": done.day.isoformat(), "rows": done.rows, "table_version": done.version, "figures": done.figures}


def data_docs() -> dict[str, Any]:
    """Validate every table's current snapshot with its suite and rebuild the Data Docs site (counts only)."""
    from spark_jobs.data_docs import build_data_docs

    settings = Settings.from_env()
    built = build_data_docs(_spark(settings), settings, settings.data_docs_dir)
    return {"index": str(built["index"]), "tables": len(built["tables"]), "failing": built["failing"],
            "skipped": list(built["skipped"])}  # fmt: skip


def kpi_report(day: str) -> dict[str, Any]:
    """Render the day's self-contained HTML report from gold.kpis_daily, linking the Data Docs site."""
    from datetime import date

    from spark_jobs.gold.kpis import render_report

    settings = Settings.from_env()
    docs = settings.data_docs_dir / "index.html"
    path = render_report(_spark(settings), settings, date.fromisoformat(day), settings.reports_dir / "kpi", docs)
    return {"report": str(path), "bytes": path.stat().st_size}


def erasures(interval_end: datetime) -> dict[str, Any]:
    """Carry out pending erasure requests and purge those past their purge time (as of the interval end)."""
    from spark_jobs.erasure import process_erasures

    settings = Settings.from_env()
    done = process_erasures(_spark(settings), settings, _utc(interval_end))
    return {"erased": list(done.erased), "purged": list(done.purged), "rows_deleted": done.rows_deleted,
            "files_vacuumed": done.files_vacuumed}  # fmt: skip
