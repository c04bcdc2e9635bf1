"""Silver builders: canonical events -> event-time sessions with their context and features, and the
micro-moments found in them.

Pure DataFrame transformations (no I/O): the silver job (spark_jobs/silver/job.py) decides which events
to recompute and merges what these return. Sessionization runs once per device in event-time order:

- a client session id is honoured when present (its events form one session, whatever the gaps);
- otherwise a gap of at least the idle timeout starts a new session, and so does reaching the maximum
  session length (a marathon is split; the next piece says `sessionized_by = 'max_length'`).

Both rules only look backwards from a session's first event, so recomputing a device from the start of
any session gives the same sessions as recomputing its whole history (the job relies on this).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import StructType

from spark_jobs.bronze.vocabulary import Vocabulary
from spark_jobs.contracts import table_contract
from spark_jobs.silver.context import ContextConfig, IpTimezones, add_context
from spark_jobs.silver.identity import person_id_column
from spark_jobs.silver.moments import Thresholds, detect

VIEW_TYPES = ("page_view", "product_view")
_KEY_INPUT = ("anonymous_id", "event_id", "session_id", "occurred_at")
_KEY_OUTPUT = "anonymous_id STRING, event_id STRING, session_id STRING, session_key STRING, sessionized_by STRING"


@dataclass(frozen=True)
class SessionRules:
    """Everything a session's shape depends on (settings and config/), fixed for one run."""

    timeout_seconds: int
    max_length_seconds: int
    engaged_gap_cap_seconds: float
    refinement_gap_seconds: float
    context: ContextConfig
    ip_table: IpTimezones


def assign_sessions(
    anonymous_id: str, ids: list[str], client: list[str | None], at_us: list[int], timeout_us: int, max_us: int
) -> tuple[list[str], list[str]]:
    """One device's events (parallel lists; event time in epoch microseconds, any order) -> the session key
    and the rule that started the session (`sessionized_by`) of each event. The rules, in event-time order:
    a client session id wins, on this device only (another device's same id is another session), and is
    split like any session when it reaches the maximum length (a stuck cookie, a bot); else a gap of at least
    the idle timeout, or reaching the maximum length, starts a new session whose key is the device and the
    session's first event time."""
    keys: list[str] = [""] * len(ids)
    reasons: list[str] = [""] * len(ids)
    start = last = -1
    reason = "idle_timeout"
    pieces: dict[str, tuple[int, str]] = {}  # client session id -> (start of its current piece, why it started)
    for i in sorted(range(len(ids)), key=lambda i: (at_us[i], ids[i])):
        if client[i] is not None:
            piece = pieces.get(client[i])
            if piece is None:
                piece = pieces[client[i]] = (at_us[i], "client_session_id")
            elif at_us[i] - piece[0] >= max_us:
                piece = pieces[client[i]] = (at_us[i], "max_length")
            suffix = "" if piece[1] == "client_session_id" else f"#{piece[0]}"
            keys[i], reasons[i] = f"{anonymous_id}#c#{client[i]}{suffix}", piece[1]
            continue
        if start < 0 or at_us[i] - last >= timeout_us:
            start, reason = at_us[i], "idle_timeout"
        elif at_us[i] - start >= max_us:
            start, reason = at_us[i], "max_length"
        last = at_us[i]
        keys[i], reasons[i] = f"{anonymous_id}#{start}", reason
    return keys, reasons


def _sessionizer(timeout_seconds: int, max_length_seconds: int):
    timeout_us, max_us = timeout_seconds * 1_000_000, max_length_seconds * 1_000_000
    output = to_arrow_schema(StructType.fromDDL(_KEY_OUTPUT))

    def per_device(events: pa.Table) -> pa.Table:
        anon = events.column("anonymous_id")[0].as_py()
        at = pc.cast(events.column("occurred_at"), pa.int64()).to_pylist()  # epoch microseconds
        keys, reasons = assign_sessions(
            anon, events.column("event_id").to_pylist(), events.column("session_id").to_pylist(), at, timeout_us, max_us
        )
        columns = [events.column("anonymous_id"), events.column("event_id"), events.column("session_id")]
        return pa.Table.from_arrays([*columns, pa.array(keys), pa.array(reasons)], schema=output)

    return per_device


def sessionize(events: DataFrame, rules: SessionRules) -> DataFrame:
    """The events with session_key (one value per session) and sessionized_by, plus their context columns."""
    keys = (
        events.select(*_KEY_INPUT)
        .groupBy("anonymous_id")
        .applyInArrow(_sessionizer(rules.timeout_seconds, rules.max_length_seconds), _KEY_OUTPUT)
        .withColumnRenamed("session_id", "_sid")
    )
    keyed = events.join(
        keys,
        (events.anonymous_id == keys.anonymous_id)
        & (events.event_id == keys.event_id)
        & events.session_id.eqNullSafe(keys._sid),
    ).drop(keys.anonymous_id, keys.event_id, keys._sid)
    return add_context(keyed, rules.context, rules.ip_table)


def person_ids(events: DataFrame, key: bytes) -> DataFrame:
    """anonymous_id -> the person a device has on its own: its first login's, else the device's.

    The same ids identity resolution gives a device with one login (`identity.person_id_column`), so a
    frame built without silver.identity_map agrees with one built with it for simple cases. The silver job
    replaces them with silver.identity_map's (cross-device links, shared devices, merges).
    """
    first_login = F.min_by("user_id", F.when(F.col("user_id").isNotNull(), F.struct("occurred_at", "event_id")))
    return (
        events.groupBy("anonymous_id")
        .agg(first_login.alias("_login"))
        .select(
            "anonymous_id",
            F.coalesce(
                person_id_column("user_id", F.col("_login"), key), person_id_column("anonymous_id", "anonymous_id", key)
            ).alias("person_id"),
        )
    )


def session_id_column() -> Column:
    """The session id, unique in silver.sessions and stable: for a client session, a hash of the device and
    the client's id (two devices sending the same client id are two sessions), and of the piece's start for
    the later pieces of one split at the maximum length; else a hash of the device and the session start.
    Needs anonymous_id, client_session_id, sessionized_by and session_start."""
    start = F.unix_micros("session_start").cast("string")
    # length-prefixed, so no client id (which may hold "|") can make two sessions' texts equal
    client = F.concat_ws(
        "|",
        F.length("anonymous_id").cast("string"),
        "anonymous_id",
        F.length("client_session_id").cast("string"),
        "client_session_id",
        F.when(F.col("sessionized_by") == "max_length", start),
    )
    return F.when(
        F.col("client_session_id").isNotNull(), F.concat(F.lit("c-"), F.substring(F.sha2(client, 256), 1, 32))
    ).otherwise(
        F.concat(
            F.lit("s-"),
            F.substring(
                F.sha2(F.concat_ws("|", "anonymous_id", F.unix_micros("session_start").cast("string")), 256),
                1,
                32,
            ),
        ),
    )


BOT = "bot"


def not_bots(sessions: DataFrame) -> DataFrame:
    """Sessions a person had: bot sessions (device_type bot, as the source's enrichment or the user agent
    says) are kept out of scores, segments, training, user features, send times and everything that feeds a
    sync."""
    if "device_type" not in sessions.columns:  # a projection without the column has no way to tell
        return sessions
    return sessions.filter(~F.col("device_type").eqNullSafe(BOT))


def client_session_id(anonymous_id: str, client_id: str, piece_start_us: int | None = None) -> str:
    """The id `session_id_column` gives a client session (piece_start_us: a later piece's start), in Python:
    for the benchmarks' references and for tests."""
    parts = [str(len(anonymous_id)), anonymous_id, str(len(client_id)), client_id]
    if piece_start_us is not None:
        parts.append(str(piece_start_us))
    return "c-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _count_of(*event_types: str) -> Column:
    return F.count_if(F.col("event_type").isin(*event_types)).cast("int")


def _first(column: str | Column) -> Column:
    """The value at the session's first event that has one (ties broken by event id)."""
    value = F.col(column) if isinstance(column, str) else column
    return F.min_by(value, F.when(value.isNotNull(), F.struct("occurred_at", "event_id")))


def _ratio(numerator: Column, denominator: Column) -> Column:
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def _session_phase(cfg: ContextConfig) -> Column:
    """entry -> browsing -> deep -> checkout, from the session's features (thresholds in config/context.yaml)."""
    return (
        F.when((F.col("cart_adds") > 0) | F.col("checkout_started") | F.col("converted"), "checkout")
        .when(
            (F.col("page_depth") >= cfg.deep_min_page_depth) | (F.col("product_views") >= cfg.deep_min_product_views),
            "deep",
        )
        .when(F.col("event_count") >= cfg.browsing_min_events, "browsing")
        .otherwise("entry")
    )


MAX_CUSTOM_NAMES = 100  # distinct custom event names counted by name per session; the rest under OTHER_CUSTOM
OTHER_CUSTOM = "(other names)"


def custom_event_counts(names: Column) -> Column:
    """An array of custom event names -> {name: how many times}; an empty map when there are none. A session
    with more than MAX_CUSTOM_NAMES distinct names (a bot, junk kinds) counts the rest under OTHER_CUSTOM, so
    the work stays bounded and no event goes uncounted."""
    named = F.slice(F.array_distinct(names), 1, MAX_CUSTOM_NAMES)
    counted = F.transform(named, lambda n: F.struct(n.alias("k"), F.size(F.filter(names, lambda x: x == n)).alias("v")))
    rest = F.size(names) - F.aggregate(counted, F.lit(0), lambda acc, kv: acc + kv["v"])
    entries = F.when(rest > 0, F.concat(counted, F.array(F.struct(F.lit(OTHER_CUSTOM).alias("k"), rest.alias("v")))))
    return F.map_from_entries(F.coalesce(entries, counted)).cast("map<string,int>")


def custom_feature_columns(vocabulary: Vocabulary, counts: Column | None = None) -> list[Column]:
    """custom_<key> for each custom feature of the vocabulary: how many events of its names (one action as each
    source spells it) a session's custom_events holds, 0 when none. What segment rules, content rules and
    learned models read."""
    counts = F.col("custom_events") if counts is None else counts
    return [
        sum((F.coalesce(F.try_element_at(counts, F.lit(name)), F.lit(0)) for name in names), F.lit(0))
        .cast("int")
        .alias(column)
        for column, names in vocabulary.feature_columns.items()
    ]


def build_sessions(keyed: DataFrame, rules: SessionRules, watermark_us: int | None = None, *, key: bytes) -> DataFrame:
    """Sessionized events (`sessionize`) -> one row per session with its features, in the contract's layout.

    watermark_us: the event time (epoch microseconds) up to which the stream is complete; a session
    whose end plus the idle timeout is at or before it is closed. Without one, no session is closed.
    person_id is the device's own (`person_ids`); the job swaps in identity resolution's.
    """
    in_session = Window.partitionBy("session_key").orderBy("occurred_at", "event_id")
    scrolls = Window.partitionBy("session_key", F.col("event_type") == "scroll").orderBy("occurred_at", "event_id")
    searches = Window.partitionBy("session_key", F.col("event_type") == "search").orderBy("occurred_at", "event_id")
    seconds = F.col("occurred_at").cast("double")
    # a depth is a percentage, by moments.scroll_depth's rule: text that is not a number, NaN, infinities and
    # values outside 0-100 are no depth (a source's odd value never stops the stream)
    raw_depth = F.col("properties")["scroll_depth"].try_cast("double")
    depth = F.when(raw_depth.between(0, 100), raw_depth)
    query = F.lower(F.trim(F.col("properties")["query"]))
    product = F.col("properties")["product_id"]
    events = (
        keyed.withColumn("_gap", F.lead(seconds).over(in_session) - seconds)
        .withColumn("_dwell", F.when(F.col("event_type").isin(*VIEW_TYPES), F.col("_gap")))
        .withColumn(
            "_scroll_speed",
            F.when(
                F.col("event_type") == "scroll",
                (depth - F.lag(depth).over(scrolls)) / (seconds - F.lag(seconds).over(scrolls)),
            ),
        )
        .withColumn(
            "_refinement",
            (F.col("event_type") == "search")
            & (seconds - F.lag(seconds).over(searches) <= rules.refinement_gap_seconds)
            & ~query.eqNullSafe(F.lag(query).over(searches)),
        )
    )
    agg = events.groupBy("session_key", "anonymous_id", "sessionized_by").agg(
        F.first("session_id", ignorenulls=True).alias("client_session_id"),
        F.max_by("user_id", F.when(F.col("user_id").isNotNull(), F.col("occurred_at"))).alias("user_id"),
        F.min("occurred_at").alias("session_start"),
        F.max("occurred_at").alias("session_end"),
        F.count(F.lit(1)).cast("int").alias("event_count"),
        F.count_distinct(F.when(F.col("event_type").isin(*VIEW_TYPES), F.col("page.path")))
        .cast("int")
        .alias("page_depth"),
        _count_of(*VIEW_TYPES).alias("page_views"),
        F.coalesce(F.avg("_dwell"), F.lit(0.0)).alias("dwell_seconds"),
        F.coalesce(F.sum("_dwell"), F.lit(0.0)).alias("dwell_total_seconds"),
        F.coalesce(
            F.sum(F.when(F.col("_gap").isNotNull(), F.least("_gap", F.lit(rules.engaged_gap_cap_seconds)))),
            F.lit(0.0),
        ).alias("engaged_seconds"),  # least() skips nulls: the last event's missing gap must not count
        F.coalesce(F.max(depth), F.lit(0.0)).alias("max_scroll_depth"),
        F.coalesce(F.avg(F.when(F.col("_scroll_speed") > 0, F.col("_scroll_speed"))), F.lit(0.0)).alias(
            "scroll_velocity"
        ),
        _count_of("scroll").alias("scrolls"),
        _count_of("click").alias("clicks"),
        _count_of("product_view").alias("product_views"),
        F.count_distinct(F.when(F.col("event_type") == "product_view", product)).cast("int").alias("distinct_products"),
        _count_of("cart_add").alias("cart_adds"),
        _count_of("wishlist_add").alias("wishlist_adds"),
        _count_of("search").alias("searches"),
        F.count_if(F.col("_refinement")).cast("int").alias("search_refinements"),
        # coalesced: a session of track calls without any page (server-side sources, apps) has no path
        F.coalesce(F.max(F.col("page.path").startswith("/checkout")), F.lit(False)).alias("checkout_started"),
        F.max(F.col("event_type") == "purchase").alias("converted"),
        F.collect_list(F.when(F.col("event_type") == "custom", F.col("event_name"))).alias("_custom_names"),
        F.max_by("page.path", F.struct("occurred_at", "event_id")).alias("drop_off_page"),
        _first("campaign.source").alias("_campaign_source"),
        _first("campaign.medium").alias("_campaign_medium"),
        _first("campaign.name").alias("campaign"),
        F.min_by(F.expr("nullif(try_parse_url(page.referrer, 'HOST'), '')"), F.struct("occurred_at", "event_id")).alias(
            "_referrer_host"
        ),
        F.min_by("page.url", F.struct("occurred_at", "event_id")).alias("_entry_url"),
        _first("source.kind").alias("source_kind"),
        _first("tz").alias("timezone"),
        _first("tz_source").alias("timezone_source"),
        F.min_by("local_time", F.struct("occurred_at", "event_id")).alias("local_start"),
        _first("device.type").alias("_sdk_device_type"),
        F.max((F.col("device.type") == BOT) | (F.col("ua_device_type") == BOT)).alias("_any_bot"),
        _first("ua_device_type").alias("_ua_device_type"),
        _first("ua_os").alias("_ua_os"),
        _first("device.os").alias("_sdk_os"),
        _first("ua_browser").alias("browser"),
    )
    own_host = F.expr("try_parse_url(_entry_url, 'HOST')")
    external_referrer = F.when(~F.col("_referrer_host").eqNullSafe(own_host), F.col("_referrer_host"))
    closed = (
        F.lit(False)
        if watermark_us is None
        else F.unix_micros("session_end") + rules.timeout_seconds * 1_000_000 <= F.lit(watermark_us)
    )
    result = (
        agg.join(person_ids(keyed, key), "anonymous_id")
        .withColumn("session_id", session_id_column())
        .withColumn("duration_seconds", F.col("session_end").cast("double") - F.col("session_start").cast("double"))
        .withColumn("is_closed", closed)
        .withColumn("repeat_product_views", F.col("product_views") - F.col("distinct_products"))
        .withColumn("click_density", _ratio(F.col("clicks"), F.col("page_views")))
        .withColumn("traffic_source", F.coalesce("_campaign_source", external_referrer, F.lit("direct")))
        .withColumn(
            "traffic_medium",
            F.coalesce(
                "_campaign_medium",
                F.when(F.col("_campaign_source").isNotNull(), F.lit("campaign")),
                F.when(external_referrer.isNotNull(), F.lit("referral")),
                F.lit("direct"),
            ),
        )
        .withColumn("local_hour", F.hour("local_start"))
        .withColumn("local_weekday", (F.dayofweek("local_start") + 5) % 7 + 1)  # ISO: 1 = Monday
        .withColumn("daypart", rules.context.daypart_column(F.col("local_hour")))
        .withColumn("custom_events", custom_event_counts(F.col("_custom_names")))
        .withColumn(
            "device_type",  # a bot is a bot whoever says so, at any event: the source's enrichment or our UA parser
            F.when(F.col("_any_bot"), F.lit(BOT)).otherwise(F.coalesce("_sdk_device_type", "_ua_device_type")),
        )
        .withColumn("os", F.coalesce("_ua_os", "_sdk_os"))
        .withColumn("session_phase", _session_phase(rules.context))
        .withColumn("updated_at", F.current_timestamp())
        .withColumn("session_date", F.to_date("session_start"))
    )
    return result.select(*table_contract("silver.sessions").column_names)


_MOMENT_INPUT = ("session_key", "anonymous_id", "session_id", "sessionized_by", "event_id", "event_type", "occurred_at",
                 "properties")  # fmt: skip
_MOMENT_OUTPUT = (
    "session_key STRING, anonymous_id STRING, client_session_id STRING, sessionized_by STRING, "
    "session_start TIMESTAMP, "
    "moment_type STRING, detected_at TIMESTAMP, event_ids ARRAY<STRING>, evidence_json STRING"
)


def _moments_of_session(thresholds: Thresholds, watermark_us: int | None):
    watermark = None if watermark_us is None else datetime.fromtimestamp(watermark_us / 1_000_000, UTC)
    output = to_arrow_schema(StructType.fromDDL(_MOMENT_OUTPUT))

    def per_session(events: pa.Table) -> pa.Table:
        rows = events.to_pylist()
        for row in rows:  # Arrow maps arrive as (key, value) pairs; times as UTC-aware datetimes
            row["properties"] = dict(row["properties"] or [])
            if row["occurred_at"].tzinfo is None:
                row["occurred_at"] = row["occurred_at"].replace(tzinfo=UTC)
        moments = detect(rows, thresholds, watermark)
        first = rows[0]
        client = next((r["session_id"] for r in rows if r["session_id"] is not None), None)
        start = min(r["occurred_at"] for r in rows)
        found = [
            {"session_key": first["session_key"], "anonymous_id": first["anonymous_id"], "client_session_id": client,
             "sessionized_by": first["sessionized_by"], "session_start": start, "moment_type": m.moment_type,
             "detected_at": m.detected_at, "event_ids": list(m.event_ids),
             "evidence_json": json.dumps(m.evidence, sort_keys=True)}
            for m in moments
        ]  # fmt: skip
        return pa.Table.from_pylist(found, schema=output)

    return per_session


def build_moments(
    keyed: DataFrame, thresholds: Thresholds, watermark_us: int | None = None, *, key: bytes
) -> DataFrame:
    """Sessionized events -> silver.micro_moments rows: every micro-moment of every session, with evidence."""
    inputs = keyed.select(*_MOMENT_INPUT, F.col("context.geo.lat").alias("lat"), F.col("context.geo.lon").alias("lon"))
    found = inputs.groupBy("session_key").applyInArrow(_moments_of_session(thresholds, watermark_us), _MOMENT_OUTPUT)
    return (
        found.join(person_ids(keyed, key), "anonymous_id")
        .withColumn("session_id", session_id_column())
        .withColumn(
            "moment_id",
            F.substring(F.sha2(F.concat_ws("|", "session_id", "moment_type", F.col("event_ids")[0]), 256), 1, 32),
        )
        .withColumn("evidence", F.from_json("evidence_json", "MAP<STRING, STRING>"))
        .withColumn("moment_date", F.to_date("detected_at"))
        .select(*table_contract("silver.micro_moments").column_names)
    )
