"""gold.user_segments -> gold.user_segments_history: the spells each person spent in each segment.

The history is derived from gold.user_segments' Change Data Feed, not from what a gold batch meant to
write, so it holds what the table really said and when (each spell starts and ends at a commit time).
`update_segment_history` applies every version not applied yet in one MERGE and is idempotent: a version
is applied to a person only if it is newer than the person's open spell, so re-running it, or running it
after a batch that was killed before it got here, neither loses nor repeats a spell.
"""

from __future__ import annotations

from datetime import UTC, datetime

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.erasure import drop_erased, suppression_list
from spark_jobs.merge import MergeCounts, merge_counts
from spark_jobs.privacy import hash_key
from spark_jobs.settings import Settings

SOURCE = "gold.user_segments"
HISTORY = "gold.user_segments_history"
_CARRIED = ("intent_score", "session_id", "model_version")


def _changes_from(spark: SparkSession, settings: Settings, start: int) -> DataFrame:
    """Each person's row after every gold.user_segments commit from `start` on (segment null: removed)."""
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start)
        .load(str(settings.table_path(SOURCE)))
        .filter(F.col("_change_type").isin("insert", "update_postimage", "delete"))
        .select(
            "person_id",
            F.when(F.col("_change_type") != "delete", F.col("segment")).alias("segment"),
            F.col("_commit_version").alias("version"),
            F.col("_commit_timestamp").alias("at"),
            *_CARRIED,
        )
    )


def update_segment_history(spark: SparkSession, settings: Settings) -> MergeCounts:
    """Open and close spells for every gold.user_segments version the history has not seen yet."""
    ensure_tables(spark, settings, (SOURCE, HISTORY))
    history = read_table(spark, settings, HISTORY)
    # two plain maxima: Delta answers them from its file statistics, without scanning the growing history
    applied = history.agg(F.max("source_version"), F.max("closed_version")).first()
    seen = max((v for v in applied if v is not None), default=None)
    latest = DeltaTable.forPath(spark, str(settings.table_path(SOURCE))).history(1).first().version
    start = 0 if seen is None else seen + 1  # versions before it are applied (later ones may be, per person)
    if start > latest:
        return MergeCounts(0, 0, 0)
    changes = _changes_from(spark, settings, start)
    # an erased person's segment changes committed before the erasure: read again, they would reopen spells
    changes = drop_erased(changes, suppression_list(spark, settings), hash_key(settings), ("person_id",), "at")
    raw = changes.localCheckpoint(eager=True)
    # only the persons these versions touch: everyone else's open spell stays as it is
    open_spells = (
        history.filter(F.col("valid_to").isNull())
        .join(raw.select("person_id").distinct(), "person_id", "left_semi")
        .select(
            "person_id",
            "segment",
            F.col("source_version").alias("version"),
            F.col("valid_from").alias("at"),
            *_CARRIED,
            F.lit(True).alias("_open"),
        )
    )
    changes = (
        raw.join(open_spells.select("person_id", F.col("version").alias("_since")), "person_id", "left")
        .filter(F.col("_since").isNull() | (F.col("version") > F.col("_since")))
        .drop("_since")
        .withColumn("_open", F.lit(False))
    )
    timeline = Window.partitionBy("person_id").orderBy("version")
    spells = (
        open_spells.unionByName(changes)
        .withColumn("_previous", F.lag("segment").over(timeline))
        # a spell starts where the segment differs from the one before (removal: null); open spells stay
        .filter(F.col("_open") | ~F.col("segment").eqNullSafe(F.col("_previous")))
        .withColumn("valid_to", F.lead("at").over(timeline))
        .withColumn("closed_version", F.lead("version").over(timeline))
        .filter(F.col("segment").isNotNull() & (~F.col("_open") | F.col("valid_to").isNotNull()))
        .select(
            "person_id",
            "segment",
            F.col("at").alias("valid_from"),
            "valid_to",
            F.col("version").alias("source_version"),
            "closed_version",
            *_CARRIED,
        )
        .select(*table_contract(HISTORY).column_names)
        .localCheckpoint(eager=True)
    )
    if spells.isEmpty():
        return MergeCounts(0, 0, 0)
    target = DeltaTable.forPath(spark, str(settings.table_path(HISTORY)))
    return merge_counts(
        target.alias("t")
        .merge(spells.alias("s"), "t.person_id = s.person_id AND t.source_version = s.source_version")
        .whenMatchedUpdate(
            condition="t.valid_to IS NULL AND s.valid_to IS NOT NULL",
            set={"valid_to": "s.valid_to", "closed_version": "s.closed_version"},
        )
        .whenNotMatchedInsertAll()
        .execute()
    )


def members_at(spark: SparkSession, settings: Settings, segment: str, at: datetime) -> DataFrame:
    """person_id of everyone in `segment` at `at` (a naive time is UTC), from the history."""
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at  # F.lit would read a naive time as driver-local
    return (
        read_table(spark, settings, HISTORY)
        .filter(
            (F.col("segment") == segment)
            & (F.col("valid_from") <= F.lit(at))
            & (F.col("valid_to").isNull() | (F.col("valid_to") > F.lit(at)))
        )
        .select("person_id")
    )
