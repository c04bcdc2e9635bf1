"""Point-in-time user features: silver.sessions -> silver.user_features, one row per (person, as_of_date).

A row describes a person as known at as_of = as_of_date 00:00 UTC, from the sessions that had ended
before that instant. A training label at time t joins the row with the greatest as_of <= t, so no
feature ever sees a session that ended after the label. The contract (tables/silver/user_features.sql)
states the window rules; window lengths and the feature version live in config/user_features.yaml.

`build_user_features` is the pure transform (sessions x a small frame of as_of dates, joined on a time
range, then aggregated); `update_user_features` is the batch job that extends the table day by day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.config import InvalidConfigError, read_mapping
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.merge import MergeCounts, replace_scopes
from spark_jobs.settings import Settings
from spark_jobs.silver.sessions import not_bots

TABLE = "silver.user_features"
SESSIONS = "silver.sessions"
KEYS = ("person_id", "as_of_date")
DAY_SECONDS = 86_400
_WINDOW_SUFFIX = re.compile(r"_(\d+)d$")
_CONFIG_KEYS = {"feature_version", "windows"}
_WINDOW_KEYS = {"short_days", "long_days"}


@dataclass(frozen=True)
class FeatureConfig:
    """config/user_features.yaml: the feature version and the two window lengths in days."""

    feature_version: str
    short_days: int = 7
    long_days: int = 28


def config_file(settings: Settings) -> Path:
    return settings.config_dir / "user_features.yaml"


def contract_windows() -> set[int]:
    """Window lengths the contract's column names carry (sessions_7d, ..._28d -> {7, 28}); pure Python."""
    found = (_WINDOW_SUFFIX.search(name) for name in table_contract(TABLE).column_names)
    return {int(match.group(1)) for match in found if match}


def _whole_days(path: Path, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer() or value < 1:
        raise InvalidConfigError(path, key, f"needs a whole number of days, at least 1; got {value!r}")
    return int(value)


def load_feature_config(path: Path) -> FeatureConfig:
    """Read and check config/user_features.yaml; every problem names the file and the key."""
    doc = read_mapping(path, _CONFIG_KEYS, "feature_version and windows")
    version = doc.get("feature_version")
    if not isinstance(version, str) or not version.strip():
        raise InvalidConfigError(path, "feature_version", f"must be a non-empty text such as 'user-features-v1', "
                                 f"got {version!r}")  # fmt: skip
    windows = doc.get("windows")
    if not isinstance(windows, dict):
        raise InvalidConfigError(path, "windows", "must be a mapping with short_days and long_days")
    unknown = sorted(set(windows) - _WINDOW_KEYS)
    if unknown:
        raise InvalidConfigError(path, f"windows.{unknown[0]}", f"unknown key; allowed: {sorted(_WINDOW_KEYS)}")
    short = _whole_days(path, "windows.short_days", windows.get("short_days"))
    long = _whole_days(path, "windows.long_days", windows.get("long_days"))
    if short >= long:
        raise InvalidConfigError(path, "windows.short_days", f"{short} must be shorter than long_days ({long})")
    named = contract_windows()
    for key, days in (("windows.short_days", short), ("windows.long_days", long)):
        if days not in named:
            contract = table_contract(TABLE).path
            raise InvalidConfigError(path, key, f"{days} days, but {contract.name} names its columns for "
                                     f"{sorted(named)}-day windows; rename those columns (e.g. sessions_{days}d) "
                                     "with the window so the names stay true")  # fmt: skip
    return FeatureConfig(version.strip(), short, long)


def _midnight(day: Column, minus_days: int = 0) -> Column:
    """The instant `day` 00:00 UTC minus whole days, independent of the session time zone and DST."""
    return F.timestamp_seconds((F.unix_date(day).cast("bigint") - minus_days) * DAY_SECONDS)


def _as_of_frame(sessions: DataFrame, as_of_dates: list[date] | DataFrame) -> DataFrame:
    if isinstance(as_of_dates, DataFrame):
        return as_of_dates.select(F.col("as_of_date").cast("date").alias("as_of_date")).distinct()
    rows = [(d,) for d in sorted(set(as_of_dates))]
    return sessions.sparkSession.createDataFrame(rows, "as_of_date DATE")


def _histogram(values: str, first: int, last: int) -> Column:
    """Counts of each whole number first..last in the array column `values` (anything else is not counted)."""
    return F.expr(f"transform(sequence({first}, {last}), k -> size(filter({values}, v -> v = k)))")


def build_user_features(sessions: DataFrame, as_of_dates: list[date] | DataFrame, cfg: FeatureConfig) -> DataFrame:
    """silver.user_features rows (contract column order) for every as_of_date given.

    sessions: silver.sessions rows. as_of_dates: dates, or a frame with a DATE column as_of_date.
    A person gets a row for an as_of_date when one of their sessions ended in [as_of - long_days, as_of).
    """
    short, long = cfg.short_days, cfg.long_days
    dates = (
        _as_of_frame(sessions, as_of_dates)
        .withColumn("_as_of", _midnight(F.col("as_of_date")))
        .withColumn("_short_start", _midnight(F.col("as_of_date"), short))
        .withColumn("_long_start", _midnight(F.col("as_of_date"), long))
    )
    # The earliest start among a person's sessions ended so far, per session in session_end order (ties
    # share a value): at the last session ended before as_of it is first_seen over all history, without
    # joining all history to every date.
    so_far = Window.partitionBy("person_id").orderBy("session_end")
    history = sessions.withColumn("_first_start", F.min("session_start").over(so_far))
    ended_in_window = (F.col("session_end") < F.col("_as_of")) & (F.col("session_end") >= F.col("_long_start"))
    joined = history.join(F.broadcast(dates), ended_in_window)

    in_long = F.col("session_start") >= F.col("_long_start")  # and ended before as_of, by the join
    in_short = F.col("session_start") >= F.col("_short_start")

    def count_if(condition: Column) -> Column:
        return F.count(F.when(condition, 1)).cast("int")

    def total(column: str) -> Column:
        return F.coalesce(F.sum(F.when(in_long, F.col(column))), F.lit(0)).cast("int")

    features = joined.groupBy("person_id", "as_of_date", "_as_of").agg(
        count_if(in_short).alias(f"sessions_{short}d"),
        count_if(in_long).alias(f"sessions_{long}d"),
        total("product_views").alias(f"product_views_{long}d"),
        total("cart_adds").alias(f"cart_adds_{long}d"),
        count_if(in_long & F.col("converted")).alias(f"purchases_{long}d"),
        # a decimal sum is exact, so the mean does not depend on the order Spark adds partial sums in
        # (a recomputation must give identical doubles, or the MERGE would rewrite unchanged rows)
        F.avg(F.when(in_long, F.col("dwell_total_seconds").cast("decimal(38,6)")))
        .cast("double")
        .alias(f"avg_dwell_seconds_{long}d"),
        F.max("session_end").alias("_last_end"),
        F.min("_first_start").alias("first_seen"),
        F.collect_list(F.when(in_long, F.col("local_hour"))).alias("_hours"),  # nulls are dropped
        F.collect_list(F.when(in_long, F.col("local_weekday"))).alias("_weekdays"),
    )
    views, adds = F.col(f"product_views_{long}d"), F.col(f"cart_adds_{long}d")
    count, purchases = F.col(f"sessions_{long}d"), F.col(f"purchases_{long}d")
    return (
        features.withColumn(f"cart_add_rate_{long}d", F.when(views > 0, adds.cast("double") / views))
        .withColumn(f"conversion_rate_{long}d", F.when(count > 0, purchases.cast("double") / count))
        .withColumn(
            "days_since_last_session",
            (F.unix_micros("_as_of") - F.unix_micros("_last_end")).cast("double") / (DAY_SECONDS * 1_000_000),
        )
        .withColumn("engagement_by_hour", _histogram("_hours", 0, 23))
        .withColumn("engagement_by_weekday", _histogram("_weekdays", 1, 7))
        .withColumn("feature_version", F.lit(cfg.feature_version))
        # the contract's types exactly (e.g. ARRAY<INT> whose elements may be null), in its column order
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in table_contract(TABLE).schema().fields])
    )


@dataclass(frozen=True)
class AsOfPlan:
    """The as_of_dates a run computes, and why it stops before `through` when it does."""

    dates: tuple[date, ...]
    held_back: str | None = None


def plan_as_of_dates(
    through: date,
    *,
    last_done: date | None,
    first_session: date | None,
    open_session_day: date | None,
    today: date,
    start: date | None = None,
) -> AsOfPlan:
    """The as_of_dates to compute: from `start` (or the day after the last one written, or after the first
    session's date when the table is empty) through `through`, stopping early where rows would not be final.

    A row for as_of is final once every session that could end before as_of is closed, so a run stops at
    the UTC day of the earliest open session's end (open_session_day), and never goes past today.
    """
    if start is None:
        if last_done is not None:
            start = last_done + timedelta(days=1)
        elif first_session is not None:
            start = first_session + timedelta(days=1)
        else:
            return AsOfPlan(())
    end, held_back = through, None
    if today < end:
        end, held_back = today, f"as_of_dates after today ({today}) would miss sessions still to come"
    if open_session_day is not None and open_session_day < end:
        end = open_session_day
        held_back = f"silver.sessions has a session still open that ended on {end}; later dates wait until it closes"
    days = (end - start).days + 1
    return AsOfPlan(tuple(start + timedelta(days=i) for i in range(max(days, 0))), held_back)


@dataclass(frozen=True)
class UserFeaturesRun:
    """What update_user_features did: the as_of_dates computed, the MERGE counts, why it stopped early."""

    dates: tuple[date, ...]
    counts: MergeCounts
    held_back: str | None = None


def _utc_day(ts: Column) -> Column:
    return F.date_from_unix_date(F.floor(F.unix_seconds(ts) / DAY_SECONDS).cast("int"))


def update_user_features(
    spark: SparkSession,
    settings: Settings,
    through: date,
    *,
    start: date | None = None,
    cfg: FeatureConfig | None = None,
    today: date | None = None,
) -> UserFeaturesRun:
    """Compute silver.user_features for every as_of_date not yet written, through `through`.

    start: recompute from this date instead (after late data or a config change). Each as_of_date's rows are
    merged as a whole: new rows inserted, changed rows updated, rows no longer produced deleted, identical
    rows left alone. A run whose dates are all written already, or whose rows come out identical, writes nothing:
    re-running it leaves the table content and its Delta version as they were.
    """
    cfg = cfg or load_feature_config(config_file(settings))
    sessions_path = str(settings.table_path(SESSIONS))
    if not DeltaTable.isDeltaTable(spark, sessions_path):
        raise FileNotFoundError(f"{SESSIONS}: no Delta table at {sessions_path}; run silver first")
    ensure_tables(spark, settings, (TABLE,))
    sessions = not_bots(read_table(spark, settings, SESSIONS))
    bounds = sessions.agg(
        F.min("session_date").alias("first_session"),
        _utc_day(F.min(F.when(~F.col("is_closed"), F.col("session_end")))).alias("open_session_day"),
    ).collect()[0]  # a global aggregate: always one row
    last_done = read_table(spark, settings, TABLE).agg(F.max("as_of_date")).collect()[0][0]
    plan = plan_as_of_dates(
        through,
        last_done=last_done,
        first_session=bounds.first_session,
        open_session_day=bounds.open_session_day,
        today=today or datetime.now(UTC).date(),
        start=start,
    )
    if not plan.dates:
        return UserFeaturesRun((), MergeCounts(0, 0, 0), plan.held_back)
    scopes = spark.createDataFrame([(d,) for d in plan.dates], "as_of_date DATE")
    fresh = build_user_features(sessions, scopes, cfg).persist()  # compared, then read more than once by MERGE
    try:
        target = read_table(spark, settings, TABLE)
        stored = target.join(scopes, "as_of_date", "left_semi")
        if _same_rows(fresh, stored):  # a MERGE that changes nothing still commits a table version
            return UserFeaturesRun(plan.dates, MergeCounts(0, 0, 0), plan.held_back)
        counts = replace_scopes(spark, settings, TABLE, fresh, KEYS, "as_of_date", scopes)
    finally:
        fresh.unpersist()
    return UserFeaturesRun(plan.dates, counts, plan.held_back)


def _same_rows(fresh: DataFrame, stored: DataFrame) -> bool:
    """Both frames hold exactly the same rows (contract columns, any order)."""
    columns = table_contract(TABLE).column_names
    fresh, stored = fresh.select(*columns), stored.select(*columns)
    return fresh.exceptAll(stored).isEmpty() and stored.exceptAll(fresh).isEmpty()
