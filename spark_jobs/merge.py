"""Replace every row of some scopes (devices, persons) in a Delta table, touching only what changed.

The silver and gold jobs recompute whole scopes (all sessions of a device, all scores of a person) and
hand the result here. One MERGE then inserts new rows, updates rows whose values changed, deletes rows
the recomputation no longer produces, and leaves identical rows alone, so the Change Data Feed shows
real changes only and re-running a batch is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.contracts import table_contract
from spark_jobs.settings import Settings


@dataclass(frozen=True)
class MergeCounts:
    inserted: int
    updated: int
    deleted: int

    def as_details(self, prefix: str = "") -> dict[str, int]:
        """{'<prefix>_inserted': n, ...} for a run record's details (no prefix: 'inserted', ...)."""
        lead = f"{prefix}_" if prefix else ""
        return {f"{lead}inserted": self.inserted, f"{lead}updated": self.updated, f"{lead}deleted": self.deleted}


def merge_counts(result: DataFrame) -> MergeCounts:
    """The rows a MERGE inserted, updated and deleted, from the metrics frame its `execute()` returns (a local
    relation: read without a Spark job or a look at the table's history; all 0 when it changed nothing)."""
    row = result.first()
    values = row.asDict() if row is not None else {}
    return MergeCounts(
        int(values.get("num_inserted_rows") or 0),
        int(values.get("num_updated_rows") or 0),
        int(values.get("num_deleted_rows") or 0),
    )


def _differs(column: str, sql_type: str) -> str:
    """SQL that is true when target and source values differ (null-safe; maps compared by sorted entries)."""
    if sql_type == "MAP":
        return f"NOT (array_sort(map_entries(t.{column})) <=> array_sort(map_entries(s.{column})))"
    return f"NOT (t.{column} <=> s.{column})"


def replace_scopes(
    spark: SparkSession,
    settings: Settings,
    table: str,
    fresh: DataFrame,
    keys: tuple[str, ...],
    scope: str | tuple[str, ...],
    scopes: DataFrame,
    close_others: tuple[str, dict[str, Column]] | None = None,
    unchanged_unless: tuple[str, ...] = (),
) -> MergeCounts:
    """Make `table`'s rows for every value of `scope` (one column or several) listed in `scopes` equal to
    `fresh`.

    keys: the columns identifying a row. close_others: an optional (target condition SQL, {col: value})
    update for rows outside the scopes (silver uses it to close sessions the watermark has passed).
    unchanged_unless: bookkeeping columns (e.g. updated_at) that do not by themselves make a row changed.
    """
    contract = table_contract(table)
    columns = contract.column_names
    scope_columns = [scope] if isinstance(scope, str) else list(scope)
    target = DeltaTable.forPath(spark, str(settings.table_path(table)))
    existing = target.toDF().join(scopes.select(*scope_columns).distinct(), scope_columns, "left_semi")
    stale = existing.select(*keys).join(fresh.select(*keys), list(keys), "left_anti")
    source = fresh.select(*columns, F.lit(False).alias("_delete")).unionByName(
        existing.join(stale, list(keys), "left_semi").select(*columns, F.lit(True).alias("_delete"))
    )
    # Computed once, here: MERGE reads its source several times, and a source with Python UDFs, broadcasts
    # and windows in its lineage was re-planned each time (hundreds of Spark jobs for a handful of rows).
    source = source.localCheckpoint(eager=True)
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    compared = [c for c in columns if c not in keys and c not in unchanged_unless]
    changed = " OR ".join(_differs(c, contract.column_types[c]) for c in compared)
    merge = (
        target.alias("t")
        .merge(source.alias("s"), on)
        .whenMatchedDelete(condition="s._delete")
        .whenMatchedUpdate(condition=f"NOT s._delete AND ({changed})", set={c: f"s.{c}" for c in columns})
        .whenNotMatchedInsert(condition="NOT s._delete", values={c: f"s.{c}" for c in columns})
    )
    if close_others is not None:
        condition, assignments = close_others
        merge = merge.whenNotMatchedBySourceUpdate(condition=condition, set=assignments)
    return merge_counts(merge.execute())
