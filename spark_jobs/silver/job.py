"""Silver stream: new bronze events -> silver.sessions, silver.micro_moments, silver.late_events.

State lives in the silver tables, not in a Spark state store: every micro-batch recomputes, for each
device it touches, the sessions that can still change and MERGEs the result (see the closing note of
issue 4 and docs in README for why this beat a stateful operator here). What can still change is
bounded by the event-time watermark:

- W (the watermark) = the newest event time seen before this batch - INTENTLAKE_ALLOWED_LATENESS,
  carried from batch to batch in ops.pipeline_runs so a replayed batch judges lateness as the first
  attempt did. A session whose end + idle timeout is at or before W is closed and final.
- An event older than W is late: it goes to silver.late_events and never changes a closed session.
- Every other event can only touch the device's open sessions, so a device is recomputed from the start
  of its earliest open session (or its first new event), plus any client-id session the window overlaps.
  Sessions before that anchor stay as they are; the work per batch is bounded by the open sessions, not
  by the device's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.erasure import drop_erased, suppression_list
from spark_jobs.merge import MergeCounts, merge_counts, replace_scopes
from spark_jobs.privacy import hash_key
from spark_jobs.quality import MAX_KEYS_REPORTED, QualityGate, QualityGateHalted
from spark_jobs.set_aside import process_or_set_aside
from spark_jobs.settings import Settings, interval_seconds
from spark_jobs.silver.context import ContextConfig, IpTimezones
from spark_jobs.silver.identity import (
    IdentityChanges,
    IdentityConfig,
    load_identity_config,
    merge_edges,
    plan_identities,
    with_person_id,
    write_identities,
)
from spark_jobs.silver.moments import Thresholds, load_thresholds
from spark_jobs.silver.sessions import SessionRules, build_moments, build_sessions, sessionize
from spark_jobs.spark import alongside
from spark_jobs.streaming import BatchRecord, run_stream

JOB = "silver"


@dataclass(frozen=True)
class SilverConfig:
    """Settings and config/ as one silver run uses them (loaded, and validated, before data moves)."""

    rules: SessionRules
    thresholds: Thresholds
    allowed_lateness_seconds: int
    gate: QualityGate
    identity: IdentityConfig

    @classmethod
    def load(cls, settings: Settings) -> SilverConfig:
        thresholds = load_thresholds(settings.micro_moments_file)
        context = ContextConfig.load(settings.context_file)
        rules = SessionRules(
            timeout_seconds=interval_seconds(settings.session_timeout),
            max_length_seconds=interval_seconds(settings.max_session_length),
            engaged_gap_cap_seconds=context.engaged_gap_cap_seconds,
            refinement_gap_seconds=thresholds.search_max_gap_seconds,
            context=context,
            ip_table=IpTimezones.load(settings.ip_timezones_file),
        )
        return cls(
            rules,
            thresholds,
            interval_seconds(settings.allowed_lateness),
            QualityGate.for_table("silver.sessions", settings.expectations_dir),
            load_identity_config(settings.identity_file),
        )


def _micros(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1_000_000)


# (lakehouse, query_id, batch_id) -> the newest event time of that batch (all its parts), as this process wrote
# it to ops.pipeline_runs: the next batch reads it here instead of scanning the run records (which grow)
_newest_seen: dict[tuple[str, str, int], datetime | None] = {}


def _previous_max_event_time(spark: SparkSession, settings: Settings, query_id: str, batch_id: int) -> datetime | None:
    """The newest event time this query had seen before `batch_id` (None for a query's first batch: a new
    checkpoint re-reads bronze from the start and rebuilds, so nothing is late to it): the previous batch's,
    remembered when this process ran it, else read from ops.pipeline_runs (the latest earlier batch, the newest
    of its parts)."""
    remembered = (str(settings.lakehouse), query_id, batch_id - 1)
    if remembered in _newest_seen:
        return _newest_seen[remembered]
    previous = (
        read_table(spark, settings, "ops.pipeline_runs")
        .filter((F.col("job") == JOB) & (F.col("query_id") == query_id) & (F.col("batch_id") < batch_id))
        .orderBy(F.col("batch_id").desc(), F.col("max_event_time").desc_nulls_last())
        .select("max_event_time")
        .first()
    )
    return None if previous is None else previous.max_event_time


def _remember_newest(settings: Settings, record: BatchRecord) -> None:
    """Keep a written batch's newest event time for the next batch (the newest of a split batch's parts)."""
    key = (str(settings.lakehouse), record.query_id, record.batch_id)
    seen = [t for t in (_newest_seen.get(key), record.max_event_time) if t is not None]
    for old in [k for k in _newest_seen if k[:2] == key[:2] and k[2] < record.batch_id - 1]:
        del _newest_seen[old]  # only the latest two batches of a query are ever asked for
    _newest_seen[key] = max(seen, default=None)


def _late_rows(late: DataFrame, watermark: datetime, silver_batch: str) -> DataFrame:
    return (
        late.withColumn("watermark", F.lit(watermark))
        .withColumn("lateness_seconds", F.lit(watermark).cast("double") - F.col("occurred_at").cast("double"))
        .withColumn("silver_batch", F.lit(silver_batch))
        .withColumn("event_date", F.to_date("occurred_at"))
        .select(*table_contract("silver.late_events").column_names)
    )


def _record_late(spark: SparkSession, settings: Settings, rows: DataFrame | None, count: int | None) -> None:
    """Insert late events not recorded yet (a replayed batch finds its rows already there)."""
    from delta.tables import DeltaTable

    if rows is None or not count:
        return

    target = DeltaTable.forPath(spark, str(settings.table_path("silver.late_events")))
    (
        target.alias("t")
        .merge(
            rows.alias("s"),
            "t.anonymous_id = s.anonymous_id AND t.event_id = s.event_id AND t.session_id <=> s.session_id",
        )
        .whenNotMatchedInsertAll()
        .execute()
    )


def stored_client_id() -> Column:
    """A stored session's client session id: the column, or (rows written before it existed) the session id
    itself, which was the client's; null for sessions the pipeline cut by idle timeout."""
    return F.coalesce(
        F.col("client_session_id"), F.when(F.col("sessionized_by") == "client_session_id", F.col("session_id"))
    )


def recompute_scope(
    spark: SparkSession, settings: Settings, accepted: DataFrame, watermark_before_us: int | None, timeout_s: int
) -> DataFrame:
    """Per touched device: the anchor (recompute events from here on) and the client session ids whose
    whole session is recomputed. Columns: anonymous_id, anchor, client_ids, lower (earliest event needed).
    """
    timeout_us = timeout_s * 1_000_000
    devices = (
        accepted.groupBy("anonymous_id")
        .agg(F.min("occurred_at").alias("first_new"), F.collect_set("session_id").alias("new_client_ids"))
        .localCheckpoint(eager=True)
    )
    # the touched devices' stored sessions, read once (four joins below use them: one scan, not four)
    sessions = (
        read_table(spark, settings, "silver.sessions")
        .select("anonymous_id", "session_start", "session_end", "sessionized_by", stored_client_id().alias("client_id"))
        .join(devices.select("anonymous_id"), "anonymous_id", "left_semi")
        .localCheckpoint(eager=True)
    )
    is_open = (
        F.lit(True)
        if watermark_before_us is None
        else F.unix_micros("session_end") + timeout_us > F.lit(watermark_before_us)
    )
    open_start = sessions.filter(is_open).groupBy("anonymous_id").agg(F.min("session_start").alias("open_start"))
    anchored = devices.join(open_start, "anonymous_id", "left").withColumn(
        "anchor0", F.least("first_new", "open_start")
    )
    # an idle-timeout session straddling anchor0 (a client session can start inside it) is recomputed whole
    straddling = (
        sessions.filter(F.col("client_id").isNull())
        .join(anchored.select("anonymous_id", "anchor0"), "anonymous_id")
        .filter(F.col("session_end") >= F.col("anchor0"))
        .groupBy("anonymous_id")
        .agg(F.min("session_start").alias("straddle_start"))
    )
    anchored = anchored.join(straddling, "anonymous_id", "left").withColumn(
        "anchor", F.least("anchor0", "straddle_start")
    )
    # client sessions with an event from the anchor on, or in this batch, are recomputed whole
    # a client session split at the maximum length is recomputed from its first piece: the pieces are cut
    # from the client session's first event, so a touched piece needs all of them
    overlapping = (
        sessions.filter(F.col("client_id").isNotNull())
        .groupBy("anonymous_id", "client_id")
        .agg(F.min("session_start").alias("first_start"), F.max("session_end").alias("last_end"))
        .join(anchored.select("anonymous_id", "anchor"), "anonymous_id")
        .filter(F.col("last_end") >= F.col("anchor"))
        .groupBy("anonymous_id")
        .agg(F.collect_set("client_id").alias("old_client_ids"), F.min("first_start").alias("client_start"))
    )
    known_client = (
        sessions.filter(F.col("client_id").isNotNull())
        .join(
            devices.select("anonymous_id", F.explode("new_client_ids").alias("client_id")),
            ["anonymous_id", "client_id"],
        )
        .groupBy("anonymous_id")
        .agg(F.min("session_start").alias("new_client_start"))
    )
    return (
        anchored.join(overlapping, "anonymous_id", "left")
        .join(known_client, "anonymous_id", "left")
        .select(
            "anonymous_id",
            "anchor",
            F.array_union(F.coalesce("old_client_ids", F.array().cast("array<string>")), "new_client_ids").alias(
                "client_ids"
            ),
            F.least("anchor", "client_start", "new_client_start").alias("lower"),
        )
    )


def merge_sessions(
    spark: SparkSession,
    settings: Settings,
    fresh: DataFrame,
    in_scope: DataFrame,
    watermark_us: int | None,
    timeout_s: int,
) -> MergeCounts:
    """Replace the (session_id, anonymous_id) rows listed in `in_scope` with `fresh` in silver.sessions, and in
    the same MERGE close every other open session whose end + timeout the watermark has passed."""
    close_passed = None
    if watermark_us is not None:
        closes_at = f"unix_micros(t.session_end) + {timeout_s * 1_000_000}"
        close_passed = (f"NOT t.is_closed AND {closes_at} <= {watermark_us}", {"is_closed": F.lit(True)})
    keys = ("session_id", "anonymous_id")
    return replace_scopes(
        spark,
        settings,
        "silver.sessions",
        fresh,
        keys,
        keys,
        in_scope,
        close_others=close_passed,
        unchanged_unless=("updated_at",),
    )


def reattribute(
    spark: SparkSession, settings: Settings, changes: IdentityChanges, identity_map: DataFrame, done: DataFrame
) -> int:
    """Give the sessions (and their moments) of devices and logins whose person changed their new person_id.

    Sessions recomputed in this batch (`done`) already have it; the others, closed ones included, get
    only their person_id rewritten. Each table is set from the map where it differs, so the two updates
    are independent: they run side by side, and a batch killed after one of them finds the other still to
    do when it is replayed. Returns how many sessions changed person.
    """
    from delta.tables import DeltaTable

    if not (changes.anonymous_ids or changes.user_ids):
        return 0
    touched = (
        read_table(spark, settings, "silver.sessions")
        .filter(
            F.col("anonymous_id").isin(*sorted(changes.anonymous_ids))
            | F.col("user_id").isin(*sorted(changes.user_ids))
        )
        .join(done, ["session_id", "anonymous_id"], "left_anti")
        .select("session_id", "anonymous_id", "user_id")
    )
    # fixed before either MERGE (a checkpoint has no lineage for a write to invalidate), with fresh column ids
    # (the checkpoint would keep the target's own ids and the MERGE could not resolve them)
    people = with_person_id(touched, identity_map, hash_key(settings)).select("session_id", "anonymous_id", "person_id")
    people = people.select(*(F.col(c).alias(c) for c in people.columns)).localCheckpoint(eager=True)
    if people.isEmpty():  # every session of theirs was recomputed in this batch
        return 0
    on = "t.session_id = s.session_id AND t.anonymous_id = s.anonymous_id"
    differs = "NOT (t.person_id <=> s.person_id)"

    def update(table: str, assignments: dict[str, object]) -> MergeCounts:
        target = DeltaTable.forPath(spark, str(settings.table_path(table)))
        merge = target.alias("t").merge(people.alias("s"), on).whenMatchedUpdate(condition=differs, set=assignments)
        return merge_counts(merge.execute())

    sessions, _ = alongside(
        lambda: update("silver.sessions", {"person_id": "s.person_id", "updated_at": F.current_timestamp()}),
        lambda: update("silver.micro_moments", {"person_id": "s.person_id"}),
    )
    return sessions.updated


def _orphaned_moment_sessions(spark: SparkSession, settings: Settings, scope: DataFrame) -> DataFrame:
    """(session_id, anonymous_id) of the scope devices' micro-moments whose session is no longer in
    silver.sessions. A batch re-keys sessions (a late event bridges two) and replaces their moments in the
    same run; if it was killed between the two MERGEs, its replay no longer sees the old session ids among
    the sessions, and this is how their moments still go."""
    devices = scope.select("anonymous_id")
    moments = (
        read_table(spark, settings, "silver.micro_moments")
        .join(devices, "anonymous_id", "left_semi")
        .select("session_id", "anonymous_id")
    )
    sessions = (
        read_table(spark, settings, "silver.sessions")
        .join(devices, "anonymous_id", "left_semi")
        .select("session_id", "anonymous_id")
    )
    return moments.join(sessions, ["session_id", "anonymous_id"], "left_anti").distinct()


# Intermediate frames are localCheckpoint()ed, not persist()ed: a Delta write to a table invalidates every
# cached frame whose lineage reads it, so a frame cached before the sessions MERGE (its scope reads
# silver.sessions) was silently recomputed afterwards, against the changed table, hundreds of Spark jobs
# at a time. A checkpoint has no lineage to invalidate.


def process_silver_batch(
    spark: SparkSession,
    settings: Settings,
    new_events: DataFrame,
    batch_id: int,
    query_id: str,
    config: SilverConfig | None = None,
    part: str = "",
) -> BatchRecord:
    """Record late events, recompute the open sessions (and their micro-moments) of every device in this
    batch of bronze events, merge them, and close sessions the watermark has passed. `part`: which part of
    a batch split by device this is (spark_jobs/set_aside.py), '' for a whole batch."""
    record = BatchRecord(JOB, query_id, batch_id, part=part)
    config = config or SilverConfig.load(settings)
    rules = config.rules
    lateness = timedelta(seconds=config.allowed_lateness_seconds)
    # events of a person erased after bronze stored them but before this batch read them: not brought back
    new = drop_erased(
        new_events, suppression_list(spark, settings), hash_key(settings), ("anonymous_id", "user_id"), "received_at"
    ).persist()
    persisted = [new]
    try:
        with record.phase("read"):
            stats = new.agg(F.count(F.lit(1)).alias("n"), F.max("occurred_at").alias("newest")).first()
        record.input_rows = stats.n
        before = _previous_max_event_time(spark, settings, query_id, batch_id)
        watermark_before = None if before is None else before - lateness
        newest = max((t for t in (before, stats.newest) if t is not None), default=None)
        record.max_event_time = newest
        record.watermark = None if newest is None else newest - lateness
        late_rows = None
        if watermark_before is not None:
            late = new.filter(F.col("occurred_at") < F.lit(watermark_before))
            accepted = new.filter(F.col("occurred_at") >= F.lit(watermark_before))
            with record.phase("late"):
                late_rows = _late_rows(late, watermark_before, f"{query_id}/{batch_id}").persist()
                persisted.append(late_rows)
                record.late_rows = late_rows.count()
        else:
            accepted, record.late_rows = new, 0
        record.details["allowed_lateness_s"] = str(config.allowed_lateness_seconds)

        with record.phase("scope"):
            scope = recompute_scope(spark, settings, accepted, _micros(watermark_before), rules.timeout_seconds)
            scope = scope.localCheckpoint(eager=True)
            lower = scope.agg(F.min("lower")).first()[0]
        if lower is None:  # nothing accepted
            _record_late(spark, settings, late_rows, record.late_rows)
            record.write(spark, settings)
            _remember_newest(settings, record)
            return record
        bronze = read_table(spark, settings, "bronze.events")
        late_known = read_table(spark, settings, "silver.late_events")
        if late_rows is not None and record.late_rows:
            late_known = late_known.unionByName(late_rows)
        history = (
            bronze.filter(F.col("event_date") >= F.lit(lower.date()))
            # an exposure is what the decision API showed, not something the person did: it stays in bronze
            # (joined to its outcomes by decision_id) and out of sessions, their features and moments
            .filter(F.col("event_type") != "exposure")
            .join(scope, "anonymous_id")
            .filter((F.col("occurred_at") >= F.col("anchor")) | F.array_contains("client_ids", F.col("session_id")))
            .drop("anchor", "client_ids", "lower")
        )
        history = history.join(
            late_known.select("anonymous_id", "event_id", F.col("session_id").alias("_late_sid")),
            (history.anonymous_id == late_known.anonymous_id)
            & (history.event_id == late_known.event_id)
            & history.session_id.eqNullSafe(F.col("_late_sid")),
            "left_anti",
        )

        def identities():  # reads bronze's edges; writes silver.identity_edges only
            with record.phase("identity"):
                # planned now, written last: a batch killed after its sessions MERGE but before the map is
                # written finds the same person changes when replayed, and re-attributes them then
                merge_edges(spark, settings, accepted)
                # a large graph: only what the batch's devices can change is collected (bounded driver memory)
                devices = accepted.select("anonymous_id").distinct()
                pending = plan_identities(spark, settings, config.identity, devices=devices)
                return pending, pending.identity_map(spark, settings).localCheckpoint(eager=True)

        def sessionized():  # the history read, the per-device sessionizer and context parsing
            with record.phase("sessionize"):
                return sessionize(history, rules).localCheckpoint(eager=True)  # sessions and moments both use it

        (pending, identity_map), keyed = alongside(identities, sessionized)
        changes = pending.changes
        record.details.update(
            identity_scope=pending.scope,
            identity_changed_devices=len(changes.anonymous_ids),
            identity_merged=len(changes.merged),
            identity_undone=len(changes.undone),
        )
        watermark_us = _micros(record.watermark)
        with record.phase("sessions"):
            sessions = build_sessions(keyed, rules, watermark_us, key=hash_key(settings))
            columns = sessions.columns
            fresh = with_person_id(sessions.drop("person_id"), identity_map, hash_key(settings)).select(*columns)
            fresh = fresh.localCheckpoint(eager=True)
            record.details["recomputed_events"] = str(keyed.count())
        with record.phase("quality"):
            failures = config.gate.failures(fresh)
        record.quality_status = "failed" if failures else "passed"
        if failures:
            record.quality_failures = {name: sorted(keys)[:MAX_KEYS_REPORTED] for name, keys in failures.items()}
            if settings.quality_policy == "halt":
                record.quality_status = "halted"
                record.write(spark, settings, app_suffix="halted")
                raise QualityGateHalted(JOB, batch_id, failures, key="session_id")
        # rows in scope: the device's sessions from the anchor on, and the recomputed client sessions
        existing = (
            read_table(spark, settings, "silver.sessions")
            .join(scope, "anonymous_id")
            .filter((F.col("session_start") >= F.col("anchor")) | F.array_contains("client_ids", stored_client_id()))
            .select("session_id", "anonymous_id")
        )
        in_scope = existing.unionByName(fresh.select("session_id", "anonymous_id")).distinct()
        in_scope = in_scope.localCheckpoint(eager=True)
        _record_late(spark, settings, late_rows, record.late_rows)

        def merged_sessions():
            with record.phase("merge"):
                return merge_sessions(spark, settings, fresh, in_scope, watermark_us, rules.timeout_seconds)

        def built_moments():  # beside the sessions MERGE; merged after it, so a MERGE refused for bad data
            with record.phase("moments"):  # (the device is then set aside) leaves no moments without sessions
                moments = build_moments(keyed, config.thresholds, watermark_us, key=hash_key(settings))
                people = fresh.select("session_id", "anonymous_id", F.col("person_id").alias("_person"))
                moments = (
                    moments.join(people, ["session_id", "anonymous_id"])
                    .withColumn("person_id", F.col("_person"))
                    .select(*moments.columns)
                ).localCheckpoint(eager=True)
                # every session the sessions MERGE deletes is in in_scope, so these may be read before it
                orphans = _orphaned_moment_sessions(spark, settings, scope)
                return moments, in_scope.unionByName(orphans).distinct().localCheckpoint(eager=True)

        counts, (moments, moment_scope) = alongside(merged_sessions, built_moments)
        with record.phase("moments_merge"):
            found = replace_scopes(
                spark,
                settings,
                "silver.micro_moments",
                moments,
                ("moment_id",),
                ("session_id", "anonymous_id"),
                moment_scope,
            )
        record.accepted_rows = fresh.count()  # what the batch computed (a replay counts it too)
        record.details.update(counts.as_details())
        record.details.update(found.as_details("moments"))
        with record.phase("reattribute"):
            record.details["reattributed_sessions"] = reattribute(spark, settings, changes, identity_map, in_scope)
            write_identities(spark, settings, pending)
        record.write(spark, settings)
        _remember_newest(settings, record)
        return record
    finally:
        for frame in reversed(persisted):
            frame.unpersist()


def bronze_stream(spark: SparkSession, settings: Settings) -> DataFrame:
    """New rows of bronze.events as a stream (bronze is append-only; erasures are skipped here)."""
    return (
        spark.readStream.format("delta")
        .option("skipChangeCommits", "true")
        .option("maxFilesPerTrigger", settings.silver_max_files_per_trigger)
        .load(str(settings.table_path("bronze.events")))
    )


def run(spark: SparkSession, settings: Settings, trigger: str | None = None, wait: bool = True) -> StreamingQuery:
    """Start the silver stream (availableNow by default: catch up, then stop)."""
    ensure_tables(spark, settings)
    config = SilverConfig.load(settings)  # a bad threshold stops the run before data moves

    def process(events: DataFrame, batch_id: int, query_id: str) -> None:
        def one(part: DataFrame, name: str) -> BatchRecord:
            return process_silver_batch(spark, settings, part, batch_id, query_id, config, part=name)

        process_or_set_aside(spark, settings, JOB, "anonymous_id", events, batch_id, query_id, one)

    pinned = {name: getattr(settings, name) for name in ("session_timeout", "max_session_length", "allowed_lateness")}
    return run_stream(bronze_stream(spark, settings), JOB, settings, process, trigger or settings.trigger, wait, pinned)
