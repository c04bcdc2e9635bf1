"""silver.profiles: per person, what a destination matches on and what the person consented to.

From the bronze events that carry a login, an email or phone (identify traits or properties), or a
statement of consent (a consent event, or any event with consent scopes), each put on its person with
silver.identity_map: the latest login, the latest non-blank email (lower-cased, trimmed) and phone, and
the consent of the latest event that stated it (a consent event with no scopes withdraws them all). Rows
are rewritten only where they changed (spark_jobs/merge.py), and a person that no longer exists (merged
into another) loses its row. Distributed throughout: nothing is collected to the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.bronze.normalize import CONSENT_SCOPES
from spark_jobs.contracts import read_table, table_contract
from spark_jobs.merge import MergeCounts, replace_scopes
from spark_jobs.privacy import hash_key
from spark_jobs.settings import Settings
from spark_jobs.silver.identity import trait, with_person_id


def build_profiles(events: DataFrame, identity_map: DataFrame, key: bytes) -> DataFrame:
    """bronze.events + silver.identity_map -> silver.profiles rows (one per person with any such event)."""
    states_consent = (F.col("event_type") == "consent") | (F.size(F.coalesce("consent", F.array())) > 0)
    relevant = events.select(
        "anonymous_id",
        F.when(F.trim("user_id") != "", F.col("user_id")).alias("user_id"),
        "occurred_at",
        F.lower(trait("email")).alias("email"),
        trait("phone").alias("phone"),
        F.when(states_consent, F.coalesce("consent", F.array().cast("array<string>"))).alias("scopes"),
        F.col("source.kind").alias("source_kind"),
    ).filter(
        F.col("user_id").isNotNull()
        | F.col("email").isNotNull()
        | F.col("phone").isNotNull()
        | F.col("scopes").isNotNull()
    )
    placed = with_person_id(relevant, identity_map, key)

    def latest(value: str | Column) -> Column:
        column = F.col(value) if isinstance(value, str) else value
        return F.max_by(column, F.when(column.isNotNull(), F.col("occurred_at")))

    consent = F.struct(F.col("scopes"), F.col("occurred_at").alias("at"), F.col("source_kind").alias("source"))
    profiles = placed.groupBy("person_id").agg(
        latest("user_id").alias("user_id"),
        latest("email").alias("email"),
        latest("phone").alias("phone"),
        F.max_by(consent, F.when(F.col("scopes").isNotNull(), F.col("occurred_at"))).alias("_consent"),
        F.max("occurred_at").alias("updated_at"),
    )
    granted = F.coalesce(F.col("_consent.scopes"), F.array().cast("array<string>"))
    return profiles.select(
        "person_id",
        "user_id",
        "email",
        "phone",
        *(F.array_contains(granted, scope).alias(f"consent_{scope}") for scope in CONSENT_SCOPES),
        F.col("_consent.at").alias("consent_updated_at"),
        F.col("_consent.source").alias("consent_source"),
        "updated_at",
    ).select(*table_contract("silver.profiles").column_names)


@dataclass(frozen=True)
class ProfilesRun:
    persons: int
    with_email: int
    consenting: dict[str, int]  # purpose -> persons who granted it
    merge: MergeCounts


def update_profiles(spark: SparkSession, settings: Settings) -> ProfilesRun:
    """Rebuild silver.profiles from bronze.events and the current identity map; rewrite changed rows only."""
    fresh = build_profiles(
        read_table(spark, settings, "bronze.events"),
        read_table(spark, settings, "silver.identity_map"),
        hash_key(settings),
    )
    fresh = fresh.localCheckpoint(eager=True)
    everyone = fresh.select("person_id").unionByName(read_table(spark, settings, "silver.profiles").select("person_id"))
    counts = replace_scopes(
        spark,
        settings,
        "silver.profiles",
        fresh,
        ("person_id",),
        "person_id",
        everyone,
        unchanged_unless=("updated_at",),
    )
    stats = fresh.agg(
        F.count(F.lit(1)).alias("persons"),
        F.count("email").alias("with_email"),
        *(F.count_if(F.col(f"consent_{s}")).alias(s) for s in CONSENT_SCOPES),
    ).first()
    return ProfilesRun(stats.persons, stats.with_email, {s: stats[s] for s in CONSENT_SCOPES}, counts)
