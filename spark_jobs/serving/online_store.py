"""The online store: what the decision API knows about each person, kept in Redis from the lakehouse's tables.

Keys (each under `settings.redis_prefix`, default `il:`):

    p:<person_id>                       a hash per person, in groups of fields, each group from one table:
        segment group  (gold.user_segments, with the deciding session's contributions from gold.session_scores)
                       segment, intent_score, contributions (JSON), model_version, session_id, last_seen_at, sessions
        send group     (gold.send_times) best_local_hour, timezone, send_source, send_confidence
        content:<ch>   (gold.content_assignments) content:<channel>: JSON of rule, priority, tone, format, cta,
                       rules_version, evaluated_at
        consent group  (silver.profiles) consent_analytics, consent_marketing, consent_personalization (1/0),
                       consent_updated_at
        v:<group>      the version of the table the group was last written from (the version guard)
        updated_at     when the hash last changed (epoch seconds)
    id:<identifier_type>:<identifier>   a hash: person_id (silver.identity_map, anonymous and login ids), so an
                                        identity merge moves a device's id to its new person
    meta:<table>                        how far the store has applied the table: version, table_id, rows, applied_at

How it is fed (`update_online_store`, a step of `run all` after gold and the last task of audience_inputs):
each source table's Change Data Feed from the version after `meta:<table>` to the table's latest, reduced to
each key's latest change, is written by the executors (`foreachPartition`-style, a pipeline of Lua calls per
partition; nothing is collected to the driver) and then `meta:<table>` moves. The offsets live in Redis
beside the data they describe, not in a Spark checkpoint, so:
- a replayed or older change never overwrites a newer one: the Lua script compares the group's `v:<group>`
  with the change's commit version and skips older ones (and a kill between the writes and `meta` replays
  a range that changes nothing);
- a Redis that lost its data (restarted without persistence, flushed) has lost `meta` too, and the next run
  rebuilds the store from the tables' current snapshots; so does a table replaced by another (its Delta
  table id changed) or a range whose change files a VACUUM removed;
- a person deleted upstream (merged into another, erased) is deleted from the group, and the version kept,
  so an older insert replayed later cannot bring them back; keys expire `online_ttl_days` after their last
  update, which is how inactive persons leave.
Erasure deletes a person's keys directly (`erase`), and the receipt counts them. The erasure's deletes reach
the store again through the feed and find no key: a delete writes no tombstone for a key that is gone, so
nothing naming the person comes back. A run holds the lakehouse lock shared (`operations.online_store`), so
no erasure falls between the versions it reads and the keys it writes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from spark_jobs.settings import Settings, interval_seconds

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

PERSON = "p:"
IDENTIFIER = "id:"
META = "meta:"
ALIAS_TYPES = ("anonymous_id", "user_id")  # what the decision API is asked with (silver.identity_map types)

# KEYS[1]: the hash. ARGV: group, version, ttl seconds, force (1: no guard), updated_at, op (set or del), n, then
# n field/value pairs to set, then the group's other field names (deleted). Returns 1 when applied, 0 when the
# hash already holds a newer version of the group. A delete of a key that does not exist (an erased person's,
# whose keys erasure removed) leaves it absent instead of writing a tombstone that would name them again.
_WRITE_GROUP = """
if ARGV[6] == 'del' and redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
local guard = 'v:' .. ARGV[1]
if ARGV[4] ~= '1' then
  local current = redis.call('HGET', KEYS[1], guard)
  if current and tonumber(current) > tonumber(ARGV[2]) then return 0 end
end
local n = tonumber(ARGV[7])
for i = 8, 7 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 8 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('HSET', KEYS[1], guard, ARGV[2], 'updated_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class OnlineStoreError(RuntimeError):
    """The online store cannot be reached or is not configured; the message says which."""


def client(settings: Settings) -> Any:
    """A Redis client for the store (decoded replies), or an error naming the setting when there is none."""
    import redis

    if not settings.redis_url:
        raise OnlineStoreError("no online store: set INTENTLAKE_REDIS_URL (e.g. redis://127.0.0.1:16379/0 after "
                               "`make redis-up`)")  # fmt: skip
    return redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=10,
                                socket_connect_timeout=5, health_check_interval=30)  # fmt: skip


@dataclass(frozen=True)
class SourceRun:
    """What one source table did to the store in a run."""

    table: str
    mode: str  # "changes" (its Change Data Feed), "rebuild" (its whole snapshot) or "current" (nothing new)
    from_version: int | None
    to_version: int | None
    written: int  # groups written
    skipped: int  # changes older than what the store holds (the version guard)
    reason: str = ""  # why a rebuild


@dataclass(frozen=True)
class OnlineStoreRun:
    sources: tuple[SourceRun, ...]
    seconds: float

    @property
    def written(self) -> int:
        return sum(s.written for s in self.sources)

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.sources)


# --- what each source table writes ------------------------------------------------------------------------


def _str(column: Column) -> Column:
    return column.cast("string")


def _fields(**columns: Column) -> Column:
    """A map of field name -> string value (null values are deleted from the hash)."""
    from pyspark.sql import functions as F

    items: list[Column] = []
    for name, column in columns.items():
        items += [F.lit(name), _str(column)]
    return F.create_map(*items)


def _iso(column: Column) -> Column:
    from pyspark.sql import functions as F

    return F.date_format(column, "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'")


def _records(rows: DataFrame, key: Column, group: Column, fields: Column) -> DataFrame:
    """What the writer takes: the Redis key (without the prefix), the group, its fields, the change."""
    return rows.select(key.alias("key"), group.alias("grp"), fields.alias("fields"), "_commit_version", "_change_type")


def _person_key() -> Column:
    from pyspark.sql import functions as F

    return F.concat(F.lit(PERSON), "person_id")


def _segment_records(spark: SparkSession, settings: Settings, rows: DataFrame) -> DataFrame:
    """gold.user_segments rows -> the segment group, with the deciding session's contributions."""
    from pyspark.sql import functions as F

    from spark_jobs.contracts import read_table

    # the deciding session started at most the longest session before it ended: read only those dates
    lookback = timedelta(seconds=interval_seconds(settings.max_session_length, "INTENTLAKE_MAX_SESSION_LENGTH"))
    earliest = rows.where("_change_type != 'delete'").agg(F.min("last_seen_at")).first()[0]
    scores = read_table(spark, settings, "gold.session_scores").select("session_id", "contributions", "session_date")
    if earliest is not None:
        scores = scores.where(F.col("session_date") >= F.lit((earliest - lookback - timedelta(days=1)).date()))
    fields = _fields(segment=F.col("segment"), intent_score=F.col("intent_score"),
                     contributions=F.to_json("contributions"), model_version=F.col("model_version"),
                     session_id=F.col("session_id"), last_seen_at=_iso(F.col("last_seen_at")),
                     sessions=F.col("sessions"))  # fmt: skip
    joined = rows.join(scores.drop("session_date"), "session_id", "left")
    return _records(joined, _person_key(), F.lit("segment"), fields)


def _send_records(spark: SparkSession, settings: Settings, rows: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    fields = _fields(best_local_hour=F.col("best_local_hour"), timezone=F.col("timezone"),
                     send_source=F.col("source"), send_confidence=F.col("confidence"))  # fmt: skip
    return _records(rows, _person_key(), F.lit("send"), fields)


def _content_records(spark: SparkSession, settings: Settings, rows: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    group = F.concat(F.lit("content:"), "channel")
    pick = F.to_json(F.struct("rule", "priority", "tone", "format", "cta", "rules_version",
                              _iso(F.col("evaluated_at")).alias("evaluated_at")))  # fmt: skip
    return _records(rows, _person_key(), group, F.create_map(group, pick))


def _consent_records(spark: SparkSession, settings: Settings, rows: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    def flag(name: str) -> Column:
        return F.when(F.col(name), "1").otherwise("0")

    fields = _fields(consent_analytics=flag("consent_analytics"), consent_marketing=flag("consent_marketing"),
                     consent_personalization=flag("consent_personalization"),
                     consent_updated_at=_iso(F.col("consent_updated_at")))  # fmt: skip
    return _records(rows, _person_key(), F.lit("consent"), fields)


def _identity_records(spark: SparkSession, settings: Settings, rows: DataFrame) -> DataFrame:
    from pyspark.sql import functions as F

    key = F.concat(F.lit(IDENTIFIER), "identifier_type", F.lit(":"), "identifier")
    ids = rows.where(F.col("identifier_type").isin(*ALIAS_TYPES))
    return _records(ids, key, F.lit("identity"), _fields(person_id=F.col("person_id")))


@dataclass(frozen=True)
class Source:
    table: str
    keys: tuple[str, ...]  # the table's key columns (a change's identity)
    records: Any  # (spark, settings, rows with _commit_version and _change_type) -> key, grp, fields, ...
    groups: tuple[str, ...] = ()  # the fields a delete removes, when the group's fields are fixed


SOURCES: tuple[Source, ...] = (
    Source("gold.user_segments", ("person_id",), _segment_records,
           ("segment", "intent_score", "contributions", "model_version", "session_id", "last_seen_at", "sessions")),
    Source("gold.send_times", ("person_id",), _send_records,
           ("best_local_hour", "timezone", "send_source", "send_confidence")),
    Source("gold.content_assignments", ("person_id", "channel"), _content_records),
    Source("silver.profiles", ("person_id",), _consent_records,
           ("consent_analytics", "consent_marketing", "consent_personalization", "consent_updated_at")),
    Source("silver.identity_map", ("identifier_type", "identifier"), _identity_records, ("person_id",)),
)  # fmt: skip


# --- writing from the executors ------------------------------------------------------------------------


class _Writer:
    """Called once per partition on an executor: its records through a pipeline of guarded writes.

    A record's fields with a null value, and a deleted record's fields, are removed from the hash; a content
    group's one field is its group name."""

    def __init__(self, url: str, prefix: str, ttl_seconds: int, force: bool, groups: tuple[str, ...],
                 batch: int = 500) -> None:  # fmt: skip
        self.url, self.prefix, self.ttl, self.force, self.groups, self.batch = (
            url, prefix, ttl_seconds, force, groups, batch
        )  # fmt: skip

    def __call__(self, rows: Iterable[Any]) -> Iterator[tuple[int, int]]:
        import redis

        connection = redis.Redis.from_url(self.url, socket_timeout=30, socket_connect_timeout=10)
        script = connection.register_script(_WRITE_GROUP)
        pipe = connection.pipeline(transaction=False)
        written = skipped = pending = 0
        now = str(int(time.time()))

        def flush() -> None:
            nonlocal written, skipped, pending
            for result in pipe.execute():
                written, skipped = written + int(result), skipped + (1 - int(result))
            pending = 0

        for row in rows:
            fields = row.fields or {}
            deleting = row._change_type == "delete"
            names = self.groups or (row.grp,)
            values = {} if deleting else {k: v for k, v in fields.items() if v is not None}
            gone = [name for name in (set(names) | set(fields)) if name not in values]
            op = "del" if deleting else "set"
            args = [row.grp, row._commit_version, self.ttl, "1" if self.force else "0", now, op, len(values)]
            for name, value in values.items():
                args += [name, value]
            script(keys=[self.prefix + row.key], args=[*args, *gone], client=pipe)
            pending += 1
            if pending >= self.batch:
                flush()
        if pending:
            flush()
        connection.close()
        yield written, skipped


def _latest(changes: DataFrame, keys: tuple[str, ...]) -> DataFrame:
    """Each key's last change in the range: the highest commit version, an insert after a delete in the same
    version (an overwrite deletes every row and inserts the new ones); pre-images are not changes."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy(*keys).orderBy(
        F.col("_commit_version").desc(), F.when(F.col("_change_type") == "delete", 1).otherwise(0)
    )
    return (
        changes.where(F.col("_change_type") != "update_preimage")
        .withColumn("_rank", F.row_number().over(order))
        .where("_rank = 1")
        .drop("_rank")
    )


def _table_state(spark: SparkSession, settings: Settings, table: str) -> tuple[int, str] | None:
    """(latest version, Delta table id), or None when the table does not exist yet."""
    from delta.tables import DeltaTable

    path = settings.table_path(table)
    if not (path / "_delta_log").is_dir():
        return None
    delta = DeltaTable.forPath(spark, str(path))
    return int(delta.history(1).first().version), str(delta.detail().first().id)


def _changes(spark: SparkSession, settings: Settings, table: str, start: int, end: int) -> DataFrame:
    return (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", start)
        .option("endingVersion", end)
        .load(str(settings.table_path(table)))
    )


def _snapshot(spark: SparkSession, settings: Settings, table: str, version: int) -> DataFrame:
    from pyspark.sql import functions as F

    from spark_jobs.contracts import read_table

    return (
        read_table(spark, settings, table, version=version)
        .withColumn("_commit_version", F.lit(version).cast("long"))
        .withColumn("_change_type", F.lit("insert"))
    )


def _feed_gone(exc: Exception) -> bool:
    """Whether a change-feed read failed because the range is gone (vacuumed files, versions past the log's
    retention, the feed off in part of it): the snapshot then rebuilds the store."""
    text = f"{getattr(exc, 'getErrorClass', lambda: '')()} {exc}"
    return any(mark in text for mark in ("FileNotFound", "CHANGE_DATA_FILE_NOT_FOUND", "VersionNotFound",
                                         "VERSION_NOT_FOUND", "CHANGE_DATA_NOT_RECORDED", "CDC_NOT_ALLOWED",
                                         "DELTA_MISSING_CHANGE_DATA"))  # fmt: skip


def _write(spark: SparkSession, settings: Settings, source: Source, rows: DataFrame, force: bool) -> tuple[int, int]:
    """Each key's latest change through the executors' guarded writes; (groups written, skipped as older)."""
    records = source.records(spark, settings, _latest(rows, source.keys))
    writer = _Writer(settings.redis_url, settings.redis_prefix, settings.online_ttl_days * 86400, force,
                     source.groups)  # fmt: skip
    counts = records.rdd.mapPartitions(writer).collect()  # one (written, skipped) per partition
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def _apply(spark: SparkSession, settings: Settings, connection: Any, source: Source) -> SourceRun:
    state = _table_state(spark, settings, source.table)
    if state is None:
        return SourceRun(source.table, "current", None, None, 0, 0, "no table yet")
    version, table_id = state
    meta = connection.hgetall(settings.redis_prefix + META + source.table)
    applied = int(meta["version"]) if meta.get("version") else None
    reason = ""
    if applied is not None and meta.get("table_id") == table_id and applied == version:
        return SourceRun(source.table, "current", applied, version, 0, 0)
    if applied is None:
        reason = "the store has nothing of this table (first run, or Redis lost its data)"
    elif meta.get("table_id") != table_id:
        reason = "the table was replaced (another Delta table id)"
    elif applied > version:
        reason = f"the store is ahead of the table (version {applied} > {version})"
    force = bool(reason) and applied is not None  # replaced or ahead: older versions must win this once
    written = skipped = 0
    if not reason:
        try:
            written, skipped = _write(spark, settings, source, _changes(spark, settings, source.table,
                                                                        applied + 1, version), False)  # fmt: skip
        except Exception as exc:  # change files vacuumed, or the feed was off somewhere in the range
            if not _feed_gone(exc):
                raise
            reason = f"its change feed from version {applied + 1} can no longer be read"
    if reason:
        written, skipped = _write(spark, settings, source, _snapshot(spark, settings, source.table, version), force)
    connection.hset(settings.redis_prefix + META + source.table, mapping={
        "version": version, "table_id": table_id, "written": written,
        "applied_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })  # fmt: skip
    mode = "rebuild" if reason else "changes"
    return SourceRun(source.table, mode, applied, version, written, skipped, reason)


def update_online_store(
    spark: SparkSession, settings: Settings, sources: tuple[Source, ...] = SOURCES
) -> OnlineStoreRun:
    """Bring the store up to every source table's latest version (see the module doc)."""
    started = time.monotonic()
    connection = client(settings)
    try:
        connection.ping()
    except Exception as exc:
        raise OnlineStoreError(f"the online store at INTENTLAKE_REDIS_URL does not answer: {type(exc).__name__}: "
                               f"{exc}") from None  # fmt: skip
    runs = tuple(_apply(spark, settings, connection, source) for source in sources)
    connection.close()
    return OnlineStoreRun(runs, time.monotonic() - started)


# --- reading, erasing, describing ------------------------------------------------------------------------


def person(connection: Any, settings: Settings, person_id: str) -> dict[str, Any] | None:
    """A person's record as the decision API uses it (JSON fields parsed), or None when the store has none."""
    raw = connection.hgetall(settings.redis_prefix + PERSON + person_id)
    return decode(raw) if holds_data(raw) else None


def holds_data(raw: dict[str, str]) -> bool:
    """Whether a person hash holds any field beyond its version guards (a tombstone holds none)."""
    return any(not k.startswith("v:") and k != "updated_at" for k in raw)


def decode(raw: dict[str, str]) -> dict[str, Any]:
    """A person hash -> typed values: scores as floats, JSON fields parsed, content per channel."""
    record: dict[str, Any] = {"content": {}}
    for name, value in raw.items():
        if name.startswith("v:"):
            continue
        if name.startswith("content:"):
            record["content"][name.removeprefix("content:")] = json.loads(value)
        elif name == "contributions":
            record[name] = json.loads(value)
        elif name in ("intent_score", "send_confidence"):
            record[name] = float(value)
        elif name in ("sessions", "best_local_hour", "updated_at"):
            record[name] = int(value)
        elif name.startswith("consent_") and name != "consent_updated_at":
            record[name] = value == "1"
        else:
            record[name] = value
    return record


def resolve(connection: Any, settings: Settings, identifier_type: str, identifier: str) -> str | None:
    """The person an anonymous or login id belongs to, as silver.identity_map last said."""
    return connection.hget(settings.redis_prefix + IDENTIFIER + f"{identifier_type}:{identifier}", "person_id")


def erase(settings: Settings, person_ids: Iterable[str], anonymous_ids: Iterable[str] = (),
          user_ids: Iterable[str] = ()) -> int:  # fmt: skip
    """Delete the persons' hashes and their ids' keys; how many of those keys existed (and are gone)."""
    keys = [settings.redis_prefix + PERSON + p for p in sorted(person_ids)]
    for identifier_type, identifiers in (("anonymous_id", anonymous_ids), ("user_id", user_ids)):
        keys += [settings.redis_prefix + IDENTIFIER + f"{identifier_type}:{i}" for i in sorted(identifiers)]
    if not keys:
        return 0
    connection = client(settings)
    try:
        return int(sum(connection.delete(*keys[i : i + 500]) for i in range(0, len(keys), 500)))
    finally:
        connection.close()


def describe(settings: Settings) -> dict[str, Any]:
    """For `intentlake status`: each source's applied version and when, and how many persons the store holds."""
    connection = client(settings)
    try:
        sources = {s.table: connection.hgetall(settings.redis_prefix + META + s.table) for s in SOURCES}
        persons = sum(1 for _ in connection.scan_iter(match=settings.redis_prefix + PERSON + "*", count=1000))
        return {"sources": sources, "persons": persons}
    finally:
        connection.close()
