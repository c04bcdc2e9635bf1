"""Gold's transforms: signals, the weighted score, segment inputs and rules, each person's current segment.

Pure DataFrame -> DataFrame functions (moment_counts and segment_inputs read silver tables they join);
the gold job (spark_jobs/gold/job.py) runs them on each micro-batch.

Each micro-batch of silver changes (Change Data Feed) names the persons whose sessions changed; their
sessions are rescored with the registry's champion (ops.models, spark_jobs/gold/models.py: the weighted
model of config/scoring.yaml or a learned one), put in the first matching segment of
config/segments.yaml, and merged into gold; gold.user_segments_history then takes the segment changes
from gold.user_segments' Change Data Feed (spark_jobs/gold/history.py). The configs are checked before
the stream starts, so an invalid config stops the run before any data moves; when the champion has
changed since the last run, the persons scored by another model are rescored first.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.bronze.vocabulary import vocabulary_at
from spark_jobs.config import ScoringModel, SegmentRule, Signal, rule_columns, rule_condition
from spark_jobs.contracts import read_table, table_contract
from spark_jobs.settings import Settings
from spark_jobs.silver.moments import MOMENT_TYPES
from spark_jobs.silver.sessions import custom_feature_columns, not_bots


def signal_value(signal: Signal) -> Column:
    """The signal scaled to 0..1 from its silver.sessions feature."""
    feature = F.col(signal.feature)
    if signal.transform == "saturate":
        return F.least(F.coalesce(feature.cast("double"), F.lit(0.0)) / F.lit(signal.cap), F.lit(1.0))
    if signal.transform == "indicator":
        return F.when(F.coalesce(feature, F.lit(0)) > 0, 1.0).otherwise(0.0)
    return F.when(feature == F.lit(signal.equals), 1.0).otherwise(0.0)


def score_sessions(sessions: DataFrame, model: ScoringModel) -> DataFrame:
    """Add intent_score (0-100), contributions (points per signal, adding up to the score) and model_version."""
    points = {s.name: F.round(signal_value(s) * F.lit(100.0 * s.weight), 4) for s in model.signals}
    contributions = F.create_map(*[part for name, col in points.items() for part in (F.lit(name), col)])
    total = sum(points.values(), F.lit(0.0))
    return (
        sessions.withColumn("contributions", contributions)
        .withColumn("intent_score", F.round(total, 4))
        .withColumn("model_version", F.lit(model.model_version))
    )


def moment_counts(spark: SparkSession, settings: Settings, sessions: DataFrame, keys: list[str]) -> DataFrame:
    """How many micro-moments of each type the sessions in `sessions` had: `keys` plus moments_<type>.
    Sessions without any moment are absent, and a type a session did not have is null: left-join the
    result and coalesce to 0."""
    return (
        read_table(spark, settings, "silver.micro_moments")
        .join(sessions.select(*keys), keys, "left_semi")
        .groupBy(*keys)
        .pivot("moment_type", list(MOMENT_TYPES))
        .agg(F.count(F.lit(1)).cast("int"))
        .select(*keys, *(F.col(t).alias(f"moments_{t}") for t in MOMENT_TYPES))
    )


def segment_inputs(spark: SparkSession, settings: Settings, scored: DataFrame) -> DataFrame:
    """Scored sessions (bots left out) plus what else a segment rule may use (`config.rule_input_schema`):
    moments_<type>, the session's micro-moments of each type; custom_<key>, the session's count of each custom
    event config/event_vocabulary.yaml names; and the person's silver.user_features as of the session's UTC
    day (point in time: sessions ended before that day; null where `intentlake features` has not run)."""
    scored = not_bots(scored)
    scored = scored.select(*scored.columns, *custom_feature_columns(vocabulary_at(settings.event_vocabulary_file)))
    keys = ["session_id", "anonymous_id"]
    counts = moment_counts(spark, settings, scored, keys)
    moment_columns = [F.coalesce(F.col(f"moments_{t}"), F.lit(0)).alias(f"moments_{t}") for t in MOMENT_TYPES]
    features = read_table(spark, settings, "silver.user_features")
    allowed = rule_columns()
    feature_columns = [c for c in features.columns if c in allowed and c != "person_id"]
    features = features.select(
        F.col("person_id").alias("_person"), F.col("as_of_date").alias("_as_of"), *feature_columns
    )
    with_moments = scored.join(counts, keys, "left").select(*scored.columns, *moment_columns)
    return with_moments.join(
        features,
        (F.col("person_id") == F.col("_person")) & (F.to_date("session_start") == F.col("_as_of")),
        "left",
    ).drop("_person", "_as_of")


def assign_segments(scored: DataFrame, rules: tuple[SegmentRule, ...]) -> DataFrame:
    """Add segment: the name of the first rule whose condition holds (the last rule catches all)."""
    segment: Column | None = None
    for rule in rules:
        condition = F.coalesce(rule_condition(rule), F.lit(False))
        segment = F.when(condition, F.lit(rule.name)) if segment is None else segment.when(condition, rule.name)
    assert segment is not None  # load_segments guarantees at least one rule
    return scored.withColumn("segment", segment.otherwise(F.lit(rules[-1].name)))


def current_segments(scores: DataFrame) -> DataFrame:
    """gold.user_segments rows: each person's most recent session decides the segment."""
    latest = Window.partitionBy("person_id").orderBy(F.col("session_start").desc(), F.col("session_id").desc())
    counted = scores.withColumn("sessions", F.count(F.lit(1)).over(Window.partitionBy("person_id")).cast("int"))
    return (
        counted.withColumn("_n", F.row_number().over(latest))
        .filter("_n = 1")
        .withColumn("last_seen_at", F.col("session_end"))
        .select(*table_contract("gold.user_segments").column_names)
    )
