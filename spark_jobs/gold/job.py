"""The gold job: silver.sessions' changes -> gold.session_scores, gold.user_segments and their history.

Each micro-batch of silver changes (Change Data Feed) names the persons whose sessions changed; their
sessions are rescored with the registry's champion (ops.models, spark_jobs/gold/models.py: the weighted
model of config/scoring.yaml or a learned one), put in the first matching segment of
config/segments.yaml (spark_jobs/gold/scoring.py), and merged into gold; gold.user_segments_history then
takes the segment changes from gold.user_segments' Change Data Feed (spark_jobs/gold/history.py). The
configs are checked before the stream starts, so an invalid config stops the run before any data moves;
when the champion has changed since the last run, the persons scored by another model are rescored first.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from spark_jobs.config import ScoringModel, SegmentRule, check_rules_compile, load_models, load_scoring, load_segments
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.gold.content import load_content_rules
from spark_jobs.gold.history import update_segment_history
from spark_jobs.gold.models import Scorer, check_config_version, resolve_champion
from spark_jobs.gold.scoring import assign_segments, current_segments, segment_inputs
from spark_jobs.locks import batch_lock
from spark_jobs.merge import replace_scopes
from spark_jobs.set_aside import process_or_set_aside
from spark_jobs.settings import Settings
from spark_jobs.silver.sessions import BOT
from spark_jobs.streaming import BatchRecord, run_stream

JOB = "gold"


def process_gold_batch(
    spark: SparkSession,
    settings: Settings,
    changes: DataFrame,
    batch_id: int,
    query_id: str,
    model: Scorer,
    rules: tuple[SegmentRule, ...],
    part: str = "",
) -> BatchRecord:
    """Rescore every person whose silver sessions changed in this batch (`changes` needs person_id only)
    with the champion `model`, and merge scores and segments. `part`: which part of a batch split by person
    this is (spark_jobs/set_aside.py), '' for a whole batch."""
    record = BatchRecord(JOB, query_id, batch_id, part=part)
    persons = changes.select("person_id").distinct().persist()
    try:
        with record.phase("read"):
            record.input_rows = changes.count()
        sessions = read_table(spark, settings, "silver.sessions").join(persons, "person_id", "left_semi")
        with record.phase("bots"):  # not scored (segment_inputs leaves them out): counted, never silently
            bots = sessions.filter(F.col("device_type") == BOT).count()
        scores = assign_segments(model.score(segment_inputs(spark, settings, sessions)), rules)
        scores = scores.select(*table_contract("gold.session_scores").column_names).persist()
        with record.phase("merge_scores"):
            record.accepted_rows = scores.count()  # what the batch computed (a replay counts it too)
            counts = replace_scopes(
                spark,
                settings,
                "gold.session_scores",
                scores,
                ("session_id", "person_id"),
                "person_id",
                persons,
            )
        with record.phase("merge_segments"):  # after the scores: a person whose scores were refused has none
            segments = replace_scopes(
                spark,
                settings,
                "gold.user_segments",
                current_segments(scores),
                ("person_id",),
                "person_id",
                persons,
            )
        scores.unpersist()
        with record.phase("segment_history"):
            history = update_segment_history(spark, settings)
        record.details.update(
            **counts.as_details("scores"),
            **segments.as_details("segments"),
            **history.as_details("history"),
            model_version=model.version,
            bot_sessions_not_scored=bots,
        )
        record.write(spark, settings)
        return record
    finally:
        persons.unpersist()


def silver_changes(spark: SparkSession, settings: Settings) -> DataFrame:
    """silver.sessions' Change Data Feed as a stream (inserts, updates and deletes)."""
    return (
        spark.readStream.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .load(str(settings.table_path("silver.sessions")))
    )


def load_config(spark: SparkSession, settings: Settings) -> tuple[ScoringModel, tuple[SegmentRule, ...]]:
    """Read and check the gold configs (and the config's weights against the registry); raises
    InvalidConfigError before anything runs or is written."""
    model = load_scoring(settings.scoring_file)
    rules = load_segments(settings.segments_file)
    check_rules_compile(spark, settings.segments_file, rules)
    load_models(settings.models_file)
    load_content_rules(settings.content_rules_file)  # content-picks runs after gold: fail here, not there
    ensure_tables(spark, settings, ("ops.models",))
    check_config_version(spark, settings, model)
    return model, rules


def rescore_stale(
    spark: SparkSession, settings: Settings, scorer: Scorer, rules: tuple[SegmentRule, ...]
) -> BatchRecord | None:
    """Rescore every person with a score from another model than the champion (after a promotion, a
    rollback or new weights), so the tables agree with the registry from this run on."""
    stale = (
        read_table(spark, settings, "gold.session_scores")
        .filter(F.col("model_version") != F.lit(scorer.version))
        .select("person_id")
        .distinct()
        .localCheckpoint(eager=True)  # fixed now: the scores MERGE below changes what the filter selects
    )
    if stale.isEmpty():
        return None
    query_id = f"rescore:{scorer.version}"
    with batch_lock(settings.lock_dir, settings.lock_timeout_seconds, f"gold rescore {scorer.version}"):
        return process_gold_batch(spark, settings, stale, 0, query_id, scorer, rules)


def run(spark: SparkSession, settings: Settings, trigger: str | None = None, wait: bool = True) -> StreamingQuery:
    """Start the gold stream (availableNow by default: catch up, then stop) with the registry's champion."""
    model, rules = load_config(spark, settings)
    ensure_tables(spark, settings)
    scorer = resolve_champion(spark, settings, model)
    rescore_stale(spark, settings, scorer, rules)

    def process(changes: DataFrame, batch_id: int, query_id: str) -> None:
        def one(part: DataFrame, name: str) -> BatchRecord:
            return process_gold_batch(spark, settings, part, batch_id, query_id, scorer, rules, part=name)

        process_or_set_aside(spark, settings, JOB, "person_id", changes, batch_id, query_id, one)

    return run_stream(silver_changes(spark, settings), JOB, settings, process, trigger or settings.trigger, wait)
