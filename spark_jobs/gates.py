"""Quality gates: validate the rows a layer's tables added since they last passed, with their GX suites.

The tables a layer's gate validates are declared in their contracts (`-- @gated: <layer>`, read through
spark_jobs/registry.py). The gate reads the data files those tables added since the version recorded in
ops.quality_gates (the files come from the Delta log) and checks them with each table's Great
Expectations suite. A failure raises QualityGateFailed naming each failing expectation and the keys of the
failing rows; the mark does not move, so the next check reads those rows again.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.contracts import read_table, table_version
from spark_jobs.quality import QualityGate
from spark_jobs.registry import gated_tables
from spark_jobs.settings import Settings

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


def added_files(location: Path, first: int, last: int) -> set[str]:
    """Data files (relative paths) added by the table's commits first..last, from the Delta log."""
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
    location = settings.table_path(table)
    snapshot = read_table(spark, settings, table, version=after)
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
    rows = read_table(spark, settings, "ops.quality_gates").collect()
    return {r.table_name: r.passed_version for r in rows}


def _record_pass(spark: SparkSession, settings: Settings, table: str, version: int, rows: int) -> None:
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


def check_layer(spark: SparkSession, settings: Settings, layer: str) -> dict[str, object]:
    """Validate every file the layer's gated tables added since they last passed, up to the version read
    now; raise QualityGateFailed naming expectations and keys, else move the marks and say what passed."""
    passed = _passed_versions(spark, settings)
    failures: dict[str, dict[str, list[str]]] = {}
    checked: dict[str, int] = {}
    reached: dict[str, int] = {}
    for table in gated_tables(layer):
        before, after = passed.get(table, -1), table_version(spark, settings, table)
        rows = new_rows(spark, settings, table, before, after)
        checked[table] = rows.count()
        reached[table] = after
        failed = QualityGate.for_table(table, settings.expectations_dir).failures(rows) if checked[table] else {}
        if failed:
            failures[table] = failed
    if failures:
        raise QualityGateFailed(layer, failures)
    for table in gated_tables(layer):
        _record_pass(spark, settings, table, reached[table], checked[table])
    return {"layer": layer, "rows_checked": checked, "passed_versions": reached, "status": "passed"}
