"""Erasure requests (the right to be forgotten) across every layer, with a receipt per request.

1. `file_request` records a request in ops.erasure_requests (status pending), identified by a user_id, an
   anonymous_id or a person_id. Filing the same identifier again while it is pending returns the same request.
2. `process_erasures(now)` (the lakehouse_maintenance DAG, or `intentlake erase --process`) resolves each
   pending request to every identifier of the person (silver.identity_map, and persons merged into or out of
   theirs in silver.identity_merges; devices bronze saw logged in as one of their logins and as nobody else,
   for events silver has not resolved yet), then deletes their rows from every table that can hold them and the
   lines naming them from the landing zone's data files (plain or gzip-compressed). The request becomes
   `erased`: the identifier itself is dropped from the row, which keeps its keyed hash and the receipt (rows deleted
   and the deleting version of each table). Before the first delete the request records its plan (the resolved
   identifiers, the rows and landing lines naming them): a try killed part-way is retried from the plan, since
   the identity tables it was resolved from may have lost the person's rows already, and the receipt and the
   purge come out as a clean run's.
3. Deleted rows still live in the files of older table versions (time travel, the Change Data Feed). Once a
   request has been erased for `erasure_purge_hours`, the tables it touched are vacuumed with that
   retention, which deletes those files, and the request becomes `purged`: time travel no longer shows the
   person. ops.erasure_requests is vacuumed too, so the pending row that named them goes as well.

Raw payloads (bronze.quarantine.raw, landing-zone lines) name the person when `names_person` says so; it
compares whole identifier values, never substrings, so erasing user "42" leaves the lines of user "420", of
event "e-4217" and of any time with 42 in it:
- a line bronze's adapters can normalise (`normalize_records`, with bronze's schema registry but without its
  size and time limits: a stale line names its person all the same) names the person when its canonical
  anonymous_id or user_id is one of theirs, or, for a Segment alias, its previousId; a Segment batch names
  them when any of its messages does;
- a record the adapters reject but that parses as JSON (a schema violation, an unknown source) names them
  when a string (or an integer, read as its digits) anywhere under one of the identifier fields of any source
  format (`normalize.IDENTIFIER_FIELDS`: userId, anon, device_id, domain_userid ...) equals an identifier;
- text that is not JSON at all (a truncated line) names them when it holds one of their identifiers as a
  whole JSON string, with its quotes: `"42"` (or its JSON-escaped form), never 42 inside other text.

Copies outside the lakehouse: before any row is deleted, every destination ops.sync_state says holds the
person (config/destinations.yaml) gets its vendor's delete call for their keys (HubSpot GDPR delete, Braze
/users/delete, Mailchimp delete-permanent, a signed person.erased webhook), and file exports are rewritten
without their rows (spark_jobs/activation/sync.py `erase_from_destinations`); the receipt lists the
destinations reached. A destination that does not confirm leaves the request pending, and the next run
calls it again. The online store (Redis, when INTENTLAKE_REDIS_URL is set) loses the person's hash and their
anonymous and login ids' keys; the receipt counts the keys deleted.

Not reached from here (the receipt says so): the Kafka topic (its retention expires the events) and Delta
log statistics (min/max values of removed files, expired with the log retention). A bronze stream behind its
topic (or a file landing late) does not bring the person back: bronze and silver drop rows naming an erased
identifier (its keyed hash is on the request's suppression list) that were received before the erasure,
and bronze counts them in its run's `erased_rows`.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType

from spark_jobs.activation.destinations import configured
from spark_jobs.activation.sync import erase_from_destinations
from spark_jobs.bronze.landing import is_landing_file
from spark_jobs.bronze.normalize import (
    BUNDLED_SCHEMAS,
    IDENTIFIER_FIELDS,
    Limits,
    RejectedEvent,
    SchemaRegistry,
    normalize_records,
)
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.locks import exclusive_lock
from spark_jobs.maintenance import purge
from spark_jobs.privacy import hash_key, keyed_hash, keyed_hash_column
from spark_jobs.registry import PersonKey, person_tables, table_info
from spark_jobs.serving import online_store
from spark_jobs.settings import Settings
from spark_jobs.spark import each_table

TABLE = "ops.erasure_requests"
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"  # a Delta commit's free-text tag
SUBJECT_TYPES = ("user_id", "anonymous_id", "person_id")
NOT_REACHED = (
    "kafka: events in the topic expire with its retention",
    "delta log statistics: min/max values of removed files expire with each table's log retention",
)


class ErasureError(ValueError):
    """An erasure request that cannot be filed or found; the message says what was wrong."""


@dataclass(frozen=True)
class Identifiers:
    """Everything that names the person in the lakehouse."""

    person_ids: frozenset[str]
    anonymous_ids: frozenset[str]
    user_ids: frozenset[str]
    other: frozenset[str]  # other identity-map identifiers (email hashes)

    @property
    def count(self) -> int:
        return len(self.person_ids) + len(self.anonymous_ids) + len(self.user_ids) + len(self.other)

    @property
    def texts(self) -> frozenset[str]:
        """Identifiers that raw payloads (quarantine, landing files) may carry."""
        return self.anonymous_ids | self.user_ids


def subject_hash(subject_type: str, subject: str, key: bytes) -> str:
    """The request's `subject_hash` (and its receipt's `subject_sha256`, a name kept for the receipts already
    handed out): HMAC-SHA256 of '<subject_type>:<subject>' under the hash key (`privacy.hash_key`). It answers
    "was X erased?" for whoever holds the key; a bare sha256 would answer it for anyone holding X."""
    return keyed_hash(f"{subject_type}:{subject}", key)


def file_request(
    spark: SparkSession, settings: Settings, subject_type: str, subject: str, requested_at: datetime
) -> str:
    """Record a pending request and return its id (the pending request's id if one exists for the subject)."""
    if subject_type not in SUBJECT_TYPES:
        raise ErasureError(f"erasure subject type {subject_type!r}: use one of {SUBJECT_TYPES}")
    if not isinstance(subject, str) or not subject.strip():
        raise ErasureError(f"erasure by {subject_type}: the identifier is empty")
    ensure_tables(spark, settings, (TABLE,))
    digest = subject_hash(subject_type, subject, hash_key(settings))
    pending = read_table(spark, settings, TABLE).where(
        (F.col("subject_hash") == digest) & (F.col("status") == "pending")
    )
    found = pending.select("request_id").first()
    if found is not None:
        return found.request_id
    request_id = str(uuid.uuid4())
    row = {"request_id": request_id, "subject_type": subject_type, "subject": subject, "subject_hash": digest,
           "requested_at": _naive(requested_at), "status": "pending"}  # fmt: skip
    schema = table_contract(TABLE).schema()
    frame = spark.createDataFrame([tuple(row.get(f.name) for f in schema.fields)], schema)
    frame.write.format("delta").mode("append").save(str(settings.table_path(TABLE)))
    return request_id


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def resolve(spark: SparkSession, settings: Settings, subject_type: str, subject: str) -> Identifiers:
    """The person behind the identifier and every identifier of theirs (the subject itself always counts)."""
    ids = read_table(spark, settings, "silver.identity_map")
    if subject_type == "person_id":
        persons = {subject}
    else:
        rows = ids.where((F.col("identifier_type") == subject_type) & (F.col("identifier") == subject))
        persons = {r.person_id for r in rows.select("person_id").distinct().collect()}
    merges = (
        read_table(spark, settings, "silver.identity_merges").select("kept_person_id", "retired_person_id").collect()
    )
    grown = True
    while grown:  # persons merged into or out of theirs (a retired person id can linger in older rows)
        linked = {m.retired_person_id for m in merges if m.kept_person_id in persons}
        linked |= {m.kept_person_id for m in merges if m.retired_person_id in persons}
        grown = not linked <= persons
        persons |= linked
    known = ids.where(F.col("person_id").isin(sorted(persons))).select("identifier_type", "identifier").collect()
    by_type: dict[str, set[str]] = {"anonymous_id": set(), "user_id": set()}
    other: set[str] = set()
    for r in known:
        by_type.get(r.identifier_type, other).add(r.identifier)
    if subject_type != "person_id":
        by_type[subject_type].add(subject)
    by_type["anonymous_id"] |= devices_logged_in_as(spark, settings, frozenset(by_type["user_id"]))
    return Identifiers(frozenset(persons), frozenset(by_type["anonymous_id"]), frozenset(by_type["user_id"]),
                       frozenset(other))  # fmt: skip


def devices_logged_in_as(spark: SparkSession, settings: Settings, user_ids: frozenset[str]) -> frozenset[str]:
    """Devices bronze.events has seen logged in as one of `user_ids` and never as anyone else.

    The identity map knows a device once silver has resolved it; a login whose events bronze holds but silver
    has not read yet (a request filed between the two, a silver stream stopped) is found here, so the
    device's events before the login go too. A device also used by another login is a shared device, which
    identity resolution never joins to anyone: it stays, as it does when found through the map. Bounded by
    the person's devices (the scan filters before anything reaches the driver)."""
    if not user_ids:
        return frozenset()
    users = sorted(user_ids)
    events = read_table(spark, settings, "bronze.events").select("anonymous_id", "user_id")
    theirs = events.where(F.col("user_id").isin(users)).select("anonymous_id").distinct()
    shared = (
        events.join(theirs, "anonymous_id", "left_semi")
        .where(F.col("user_id").isNotNull() & (F.trim("user_id") != "") & ~F.col("user_id").isin(users))
        .select("anonymous_id")
    )
    return frozenset(r.anonymous_id for r in theirs.join(shared, "anonymous_id", "left_anti").collect())


# Every source field that names a person, in any format bronze accepts (bronze's own table of them).
_IDENTIFIER_KEYS = frozenset(f for columns in IDENTIFIER_FIELDS.values() for fields in columns.values() for f in fields)
# Who a line names does not depend on whether bronze would accept it today: no size or time limits.
_NO_LIMITS = Limits(max_record_bytes=sys.maxsize, max_clock_skew_s=sys.maxsize, max_event_age_s=sys.maxsize)
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')


def names_person(
    line: str | bytes | None, identifiers: frozenset[str], registry: SchemaRegistry = BUNDLED_SCHEMAS
) -> bool:
    """Whether one raw input line (a landing-zone line, a quarantined payload) names any of `identifiers`,
    by whole values (the rule is in this module's docstring). The one decision for quarantine and landing."""
    if not line or not identifiers:
        return False
    text = (line.decode("utf-8", "replace") if isinstance(line, bytes) else line).rstrip("\r\n")
    if "\\" not in text and not any(needle in text for needle in _needles(identifiers)):
        return False  # holds none of them, not even JSON-escaped or derived: most lines stop here, unparsed
    for raw, outcome in normalize_records(text, _NO_LIMITS, registry):
        if isinstance(outcome, RejectedEvent):
            if _rejected_names(raw, identifiers):
                return True
        elif not _canonical_ids(outcome).isdisjoint(identifiers):
            return True
    return False


@functools.lru_cache(maxsize=16)
def _needles(identifiers: frozenset[str]) -> tuple[str, ...]:
    """Texts of which a line naming any identifier holds at least one (unless it holds a JSON escape): each
    identifier and, for one an adapter derives (Segment's `uid:<userId>` when a call carries only a login),
    the source text after its first colon."""
    return tuple(sorted({part for t in identifiers for part in (t, t.partition(":")[2]) if part}))


def _canonical_ids(event: dict) -> set[object]:
    found = {event.get("anonymous_id"), event.get("user_id")}
    if (event.get("source") or {}).get("kind") == "segment":
        found.add((event.get("properties") or {}).get("previous_id"))  # an alias names the id it replaces
    return found


def _rejected_names(raw: str, identifiers: frozenset[str]) -> bool:
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return _holds_json_string(raw, identifiers)
    stack: list[tuple[object, bool]] = [(payload, False)]  # (value, is under an identifier field)
    while stack:  # iterative: no recursion on hostile input
        value, is_identifier = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, is_identifier or k in _IDENTIFIER_KEYS) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, is_identifier) for v in value)
        elif is_identifier and isinstance(value, str | int) and not isinstance(value, bool):
            if str(value) in identifiers:
                return True
    return False


def _holds_json_string(text: str, identifiers: frozenset[str]) -> bool:
    """Whether text that is not JSON holds an identifier as a whole JSON string (`"42"`, quotes included)."""
    for token in _JSON_STRING.finditer(text):  # read as strings from the first quote on ...
        try:
            if json.loads(token.group()) in identifiers:
                return True
        except ValueError:
            continue
    for t in identifiers:  # ... or from any quote: a broken line can put the reading out of step
        for needle in {json.dumps(t), json.dumps(t, ensure_ascii=False)}:
            at = text.find(needle)
            while at >= 0:
                if (at - len(text[:at].rstrip("\\"))) % 2 == 0:  # the quote itself is not escaped
                    return True
                at = text.find(needle, at + 1)
    return False


def payload_names(column: str, identifiers: frozenset[str], registry: SchemaRegistry = BUNDLED_SCHEMAS) -> Column:
    """The rows whose raw payload in `column` names any of `identifiers` (`names_person`, run on the executors)."""
    if not identifiers:
        return F.lit(False)
    return F.udf(lambda raw: names_person(raw, identifiers, registry), BooleanType())(F.col(column))


def _isin(column: str, values: frozenset[str]) -> Column:
    return F.col(column).isin(sorted(values)) if values else F.lit(False)


def conditions(ids: Identifiers, registry: SchemaRegistry = BUNDLED_SCHEMAS) -> dict[str, Column]:
    """Per table that can hold a person's rows, the rows that belong to this person: a row belongs to them
    when one of the table's person keys (`-- @person:` in its contract, spark_jobs/registry.py) names them.
    `registry`: the canonical schemas bronze reads raw payloads with."""
    values = {
        "person_id": ids.person_ids,
        "anonymous_id": ids.anonymous_ids,
        "user_id": ids.user_ids,
        "identifier": ids.texts | ids.other | ids.person_ids,
    }

    def names(key: PersonKey) -> Column:
        if key.kind == "payload":
            held = payload_names(key.column, ids.texts, registry)
        else:
            held = _isin(key.column, values[key.kind])
        return held if key.when is None else F.expr(key.when) & held

    return {
        table: reduce(lambda a, b: a | b, (names(k) for k in table_info(table).person_keys))
        for table in person_tables()
    }


def _delete(
    spark: SparkSession, settings: Settings, table: str, condition: Column, probe: bool = True
) -> tuple[int, int | None]:
    """Delete the rows; (rows deleted, the deleting version or None when nothing matched). `probe`: look for
    a matching row first, so a table without one gets no commit (skipped when the caller counted them)."""
    from delta.tables import DeltaTable

    location = str(settings.table_path(table))
    if probe and read_table(spark, settings, table).where(condition).limit(1).count() == 0:
        return 0, None
    delta = DeltaTable.forPath(spark, location)
    delta.delete(condition)
    last = delta.history(1).first()
    deleted = int(last.operationMetrics.get("numDeletedRows", "0"))
    properties = spark.sql(f"SHOW TBLPROPERTIES delta.`{location}`").collect()
    if any(p.key == "delta.enableDeletionVectors" and p.value == "true" for p in properties):
        spark.sql(f"REORG TABLE delta.`{location}` APPLY (PURGE)")  # rewrite files instead of masking rows
        last = delta.history(1).first()
    return deleted, int(last.version)


def _delete_everywhere(
    spark: SparkSession, settings: Settings, where: dict[str, Column], tag: str, probe: bool = True
) -> dict[str, tuple[int, int | None]]:
    """`_delete` in every table, a few tables at a time (independent Delta logs), each deleting commit carrying
    `tag` as its userMetadata. A failure leaves the request pending; the retry deletes again (what an earlier
    try deleted is gone already) and finds that try's commits by the tag (`_tagged_version`)."""
    spark.conf.set(USER_METADATA, tag)
    try:
        done = each_table(lambda t: _delete(spark, settings, t, where[t], probe), where)
        return dict(zip(where, done, strict=True))
    finally:
        spark.conf.unset(USER_METADATA)


def _tagged_version(spark: SparkSession, settings: Settings, table: str, tag: str) -> int | None:
    """The latest version of the table committed under `tag` (an earlier try's deleting commit)."""
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, str(settings.table_path(table))).history()
    return history.where(F.col("userMetadata") == tag).agg(F.max("version")).first()[0]


def _count_matches(spark: SparkSession, settings: Settings, where: dict[str, Column]) -> dict[str, int]:
    """Rows naming the person, per table."""
    counts = each_table(lambda t: read_table(spark, settings, t).where(where[t]).count(), where)
    return dict(zip(where, counts, strict=True))


def _plan(ids: Identifiers, rows: dict[str, int], landing: int) -> dict:
    identifiers = {name: sorted(getattr(ids, name)) for name in ("person_ids", "anonymous_ids", "user_ids", "other")}
    return {"identifiers": identifiers, "rows": rows, "landing": landing}


def _planned_ids(plan: dict) -> Identifiers:
    return Identifiers(**{name: frozenset(values) for name, values in plan["identifiers"].items()})


def scrub_landing(
    settings: Settings, texts: frozenset[str], registry: SchemaRegistry | None = None, count_only: bool = False
) -> int:
    """Remove the lines naming any of `texts` (`names_person`) from the landing zone's data files, plain or
    gzip-compressed, each file replaced atomically; returns the lines removed (`count_only`: the lines that
    name them, nothing changed). Bronze has read these files already or will read the scrubbed version. Files
    whose names are not landing data (`landing.is_landing_file`: notes, in-progress copies) are left alone, in
    subfolders too."""
    if not texts or not settings.landing.exists():
        return 0
    registry = registry or SchemaRegistry.load(settings.schema_dir)
    removed = 0
    for path in sorted(p for p in settings.landing.rglob("*") if p.is_file() and is_landing_file(p.name)):
        is_gzip = path.name.endswith(".gz")
        content = path.read_bytes()
        if is_gzip:
            try:
                content = gzip.decompress(content)
            except (OSError, EOFError) as exc:
                raise ErasureError(
                    f"landing file {path}: not readable as gzip ({exc}), so the lines naming the person cannot be "
                    "removed from it; repair or delete the file, and the next run erases the request again"
                ) from None
        lines = content.splitlines(keepends=True)
        kept = [line for line in lines if not names_person(line, texts, registry)]
        if len(kept) == len(lines):
            continue
        removed += len(lines) - len(kept)
        if count_only:
            continue
        scrubbed = b"".join(kept)
        temporary = path.with_name(f".{path.name}.erasing")  # hidden: Spark's file source skips it
        temporary.write_bytes(gzip.compress(scrubbed, mtime=0) if is_gzip else scrubbed)
        os.replace(temporary, path)
    return removed


@dataclass(frozen=True)
class ErasureRun:
    erased: tuple[str, ...]  # request ids erased in this run
    purged: tuple[str, ...]  # request ids purged in this run
    rows_deleted: int
    files_vacuumed: int


def _update(spark: SparkSession, settings: Settings, request_id: str, values: dict[str, object]) -> None:
    from delta.tables import DeltaTable

    columns = table_contract(TABLE).schema()
    schema = ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in columns if f.name in values or
                       f.name == "request_id")  # fmt: skip
    names = [f.name for f in columns if f.name in values or f.name == "request_id"]
    source = spark.createDataFrame([tuple({"request_id": request_id, **values}[n] for n in names)], schema)
    (
        DeltaTable.forPath(spark, str(settings.table_path(TABLE)))
        .alias("t")
        .merge(source.alias("s"), "t.request_id = s.request_id")
        .whenMatchedUpdate(set={n: f"s.{n}" for n in names if n != "request_id"})
        .execute()
    )


def erase_pending(spark: SparkSession, settings: Settings, now: datetime) -> tuple[list[str], int]:
    """Delete every pending request's person from every layer; (request ids erased, rows deleted)."""
    pending = read_table(spark, settings, TABLE).where(F.col("status") == "pending").orderBy("requested_at").collect()
    registry = SchemaRegistry.load(settings.schema_dir)  # raw payloads are read as bronze reads them
    erased, total = [], 0
    for request in pending:
        at = max(_naive(now), request.requested_at)  # a backfilled run's interval may end before the request
        # The plan (who, and how many rows and lines name them) is recorded before anything is deleted: a try
        # killed part-way leaves it, and the retry deletes, counts and purges the same person, although the
        # identity tables it would resolve them from may already have lost their rows.
        if request.plan is None:
            ids = resolve(spark, settings, request.subject_type, request.subject)
            where = conditions(ids, registry)
            landing = scrub_landing(settings, ids.texts, registry, count_only=True)
            plan = _plan(ids, _count_matches(spark, settings, where), landing)
            _update(spark, settings, request.request_id, {"plan": json.dumps(plan, sort_keys=True)})
            # counted under the lock just now: only the tables with rows are deleted from, without a probe
            targets, probe = {t: c for t, c in where.items() if plan["rows"][t]}, False
        else:
            plan = json.loads(request.plan)
            ids = _planned_ids(plan)
            where = conditions(ids, registry)
            targets, probe = where, True  # an earlier try may have deleted some, and rows may have come since
        # the copies destinations hold first: a destination that does not confirm keeps the request pending
        reached = erase_from_destinations(spark, settings, configured(settings), ids.person_ids)
        # and the online store's keys (a Redis that does not answer raises: the request stays pending)
        online = (
            {"keys_deleted": online_store.erase(settings, ids.person_ids, ids.anonymous_ids, ids.user_ids)}
            if settings.redis_url
            else "not configured"
        )
        tag = f"intentlake erasure {request.request_id}"
        done = _delete_everywhere(spark, settings, targets, tag, probe)
        # what the plan counted, or more if rows naming them arrived between a killed try and this one
        rows = {t: max(plan["rows"].get(t, 0), done.get(t, (0, None))[0]) for t in where}
        versions = {table: version for table, (_, version) in done.items() if version is not None}
        for table in sorted(t for t, n in rows.items() if n and t not in versions):  # deleted by an earlier try
            if (version := _tagged_version(spark, settings, table, tag)) is not None:
                versions[table] = version
        rows["landing"] = max(plan["landing"], scrub_landing(settings, ids.texts, registry))
        total += sum(rows.values())
        receipt = {
            "request_id": request.request_id,
            "subject_type": request.subject_type,
            "subject_sha256": request.subject_hash,
            "requested_at": request.requested_at.isoformat(),
            "erased_at": at.isoformat(),
            "identifiers": ids.count,
            "rows_deleted": rows,
            "destinations": reached,
            "online_store": online,
            "table_versions": versions,
            "purge_after_hours": settings.erasure_purge_hours,
            "not_reached": list(NOT_REACHED),
        }
        key = hash_key(settings)
        suppressed = sorted({keyed_hash(i, key) for i in ids.texts | ids.other | ids.person_ids})
        _update(spark, settings, request.request_id, {
            "subject": None, "plan": None, "status": "erased", "erased_at": at, "identifiers": ids.count,
            "rows_deleted": rows, "table_versions": versions, "receipt": json.dumps(receipt, sort_keys=True),
            "suppressed": suppressed, "suppressed_before": _naive(datetime.now(UTC)),
        })  # fmt: skip
        erased.append(request.request_id)
    return erased, total


def purge_erased(spark: SparkSession, settings: Settings, now: datetime) -> tuple[list[str], int]:
    """Vacuum the tables of every request erased at least `erasure_purge_hours` ago; (ids purged, files)."""

    hours = settings.erasure_purge_hours
    due = (
        read_table(spark, settings, TABLE)
        .where(F.col("status") == "erased")
        .where((F.col("erased_at") <= F.lit(_naive(now) - timedelta(hours=hours))) | F.lit(hours == 0))
        .collect()
    )
    if not due:
        return [], 0
    tables = sorted({t for r in due for t, n in (r.rows_deleted or {}).items() if n and t != "landing"})
    files = purge(spark, settings, tables, hours)
    for r in due:
        at = max(_naive(now), r.erased_at)
        receipt = json.loads(r.receipt)
        receipt["purged_at"] = at.isoformat()
        _update(spark, settings, r.request_id, {"status": "purged", "purged_at": at,
                                                "receipt": json.dumps(receipt, sort_keys=True)})  # fmt: skip
    files += purge(spark, settings, [TABLE], hours)  # the pending rows that named the persons
    return [r.request_id for r in due], files


def suppression_list(spark: SparkSession, settings: Settings) -> DataFrame | None:
    """(hash, before) for every identifier of every erased person: rows naming one of them that were received
    or committed upstream before `before` are the erased ones, should a lagging batch read them again.
    None when no request has been carried out (then a batch pays nothing for it)."""
    if not (settings.table_path(TABLE) / "_delta_log").is_dir():
        return None  # no request was ever filed in this lakehouse
    requests = read_table(spark, settings, TABLE)
    if "suppressed" not in requests.columns:
        return None  # a table from before suppression lists: ensure_tables adds the column on the next run
    requests = requests.where(F.col("suppressed").isNotNull())
    rows = requests.select(F.explode("suppressed").alias("_suppressed"), F.col("suppressed_before").alias("_before"))
    return None if rows.isEmpty() else rows


def drop_erased(frame: DataFrame, suppressed: DataFrame | None, key: bytes, columns: tuple[str, ...],
                time_column: str) -> DataFrame:  # fmt: skip
    """`frame` without the rows whose `columns` name an erased person (their keyed hash is in the suppression
    list) and whose `time_column` is before that erasure's deletes. A person who comes back after the
    erasure is a new start: their later rows stay."""
    if suppressed is None:
        return frame
    listed = F.broadcast(suppressed)
    for column in columns:
        named = keyed_hash_column(F.col(column), key) == F.col("_suppressed")
        frame = frame.join(listed, named & (F.col(time_column) <= F.col("_before")), "left_anti")
    return frame


def process_erasures(spark: SparkSession, settings: Settings, now: datetime) -> ErasureRun:
    """Erase every pending request, then purge the ones whose purge time has come (`now` is the run's
    interval end: a retry sees the same requests as done and changes nothing). Holds the lakehouse lock
    alone: no micro-batch is in flight while rows are deleted and purged (spark_jobs/locks.py)."""
    ensure_tables(spark, settings)
    with exclusive_lock(settings.lock_dir, settings.lock_timeout_seconds, "erasure"):
        erased, rows = erase_pending(spark, settings, now)
        purged, files = purge_erased(spark, settings, now)
    return ErasureRun(tuple(erased), tuple(purged), rows, files)


def receipt(spark: SparkSession, settings: Settings, request_id: str) -> dict:
    """The request's receipt (status and, once erased, what was deleted where)."""
    ensure_tables(spark, settings, (TABLE,))
    row = read_table(spark, settings, TABLE).where(F.col("request_id") == request_id).first()
    if row is None:
        raise ErasureError(f"no erasure request {request_id!r} in {TABLE}")
    body = json.loads(row.receipt) if row.receipt else {}
    return {"request_id": row.request_id, "status": row.status, "subject_type": row.subject_type,
            "subject_sha256": row.subject_hash, "requested_at": row.requested_at.isoformat(), **body}  # fmt: skip
