"""Segment syncs: send each destination (config/destinations.yaml) what changed in its audience.

1. The audience (`audience`): gold.user_segments in the destination's segments (read at one version, which
   every state row and the run record name), joined with the session's top three score contributions,
   gold.send_times, the content pick for the destination's channel (gold.content_assignments) and
   silver.profiles for the match key (email or user_id) and consent. Only persons who granted the
   destination's consent purpose and have a match key are in it; the optional filter applies last. The
   mapped fields become a JSON document and a sha256 of it with the key.
2. The diff (`changes`) against ops.sync_state: an upsert for a person the destination does not hold, holds
   outside the audience, or holds with other fields; a removal for a person it holds in the audience who is
   no longer in it (left the segments, withdrew consent, lost the key, failed the filter), and for the old
   key of a person whose key changed. `full` upserts everyone in the audience again.
3. Sending (`sync`): removals first, then upserts, in the destination's batch size, through its adapter
   (spark_jobs/activation/vendors.py: rate limits, retries, per-record errors). Rows are read partition by
   partition (`toLocalIterator`), so the driver holds one partition and one commit's acknowledgements, not
   the audience. What each batch brings back is journaled at once (a small file per batch under
   <checkpoints>/sync/<destination>/, written atomically), and every INTENTLAKE_SYNC_COMMIT_EVERY (default
   2,000) acknowledgements are merged into ops.sync_state and refusals appended to ops.sync_rejections. A
   sync killed mid-run commits the journal first when it starts again, so it sends nothing the destination
   acknowledged again: at most the batch whose answer the kill cut off (upserts are idempotent at every
   vendor; a webhook batch's id is its content hash, for the receiver to drop the repeat).
   Refused persons are not marked synced: the next run tries them again. The run ends with a row in
   ops.sync_runs, failed ones included.

A file destination gets the whole audience as one file each run (written atomically, with a manifest), and
its state is kept the same way, so its runs report the same diff.

Locks: a sync holds the lakehouse lock shared for the whole run, so an erasure (which takes it alone)
never runs between the audience read and a state commit, and a per-destination lock, so two syncs of one
destination never interleave.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.activation.destinations import Destination, credentials
from spark_jobs.activation.transport import RetryPolicy, TransportStats
from spark_jobs.activation.vendors import ADAPTERS, BatchOutcome, Member, chunks, remove_from_file, write_file
from spark_jobs.contracts import read_table, table_contract, table_version
from spark_jobs.locks import _flock, batch_lock
from spark_jobs.settings import Settings

log = logging.getLogger(__name__)

MODES = ("diff", "full", "dry_run")

# The three signals that added most to the deciding session's score, largest first (ties by name).
TOP_CONTRIBUTIONS = (
    "array_join(transform(slice(sort_array(transform(filter(map_entries(contributions), e -> e.value > 0), "
    "e -> named_struct('minus', -e.value, 'signal', e.key))), 1, 3), e -> e.signal), ',')"
)


@dataclass
class SyncResult:
    """One destination's run, as ops.sync_runs records it."""

    run_id: str
    destination: str
    destination_type: str
    mode: str
    gold_version: int
    started_at: datetime
    status: str = "failed"
    audience: int = 0
    added: int = 0  # upserts of persons the destination did not hold in the audience
    updated: int = 0  # upserts of persons it holds with other fields (or another key)
    resent: int = 0  # upserts of unchanged persons (a full run)
    removals: int = 0
    unchanged: int = 0
    dead_lettered: int = 0  # calls refused INTENTLAKE_SYNC_MAX_TRIES times: not sent until their payload changes
    acknowledged: int = 0
    rejected: int = 0
    stats: TransportStats = field(default_factory=TransportStats)
    finished_at: datetime | None = None
    error: str | None = None
    file: str | None = None
    samples: list[dict] = field(default_factory=list)  # a dry run's first few calls: person_id, change, fields
    recovered: int = 0  # acknowledgements an interrupted run had journaled, committed before this one's diff

    @property
    def upserts(self) -> int:
        return self.added + self.updated + self.resent

    def summary(self) -> dict[str, object]:
        """Counts and names only (what a DAG task returns to XCom)."""
        return {
            "destination": self.destination, "run_id": self.run_id, "mode": self.mode, "status": self.status,
            "gold_version": self.gold_version, "audience": self.audience, "added": self.added,
            "updated": self.updated, "resent": self.resent, "removals": self.removals, "unchanged": self.unchanged,
            "dead_lettered": self.dead_lettered, "acknowledged": self.acknowledged,
            "rejected": self.rejected, "requests": self.stats.requests, "retries": self.stats.retries,
            "throttled": self.stats.throttled, "recovered": self.recovered,
        }  # fmt: skip


def audience(spark: SparkSession, settings: Settings, destination: Destination, version: int) -> DataFrame:
    """Persons in the destination's audience at gold.user_segments `version`: person_id, match_value,
    segment, fields_json (the mapped fields) and payload_hash."""
    segments = read_table(spark, settings, "gold.user_segments", version).filter(
        F.col("segment").isin(list(destination.segments))
    )
    scores = read_table(spark, settings, "gold.session_scores").select(
        "session_id", F.expr(TOP_CONTRIBUTIONS).alias("top_contributions")
    )
    times = read_table(spark, settings, "gold.send_times").select("person_id", "best_local_hour", "timezone")
    frame = segments.join(scores, "session_id", "left").join(times, "person_id", "left")
    channel = destination.content_channel
    picks = (
        read_table(spark, settings, "gold.content_assignments")
        .filter(F.col("channel") == F.lit(channel or ""))
        .select(
            "person_id",
            F.col("channel").alias("content_channel"),
            F.col("rule").alias("content_rule"),
            "tone",
            "format",
            "cta",
        )
    )
    frame = frame.join(picks, "person_id", "left")
    match = F.trim(F.col(destination.match_key))
    profiles = (
        read_table(spark, settings, "silver.profiles")
        .filter(F.col(f"consent_{destination.consent}") & match.isNotNull() & (match != ""))
        .select("person_id", match.alias("match_value"))
    )
    frame = frame.join(profiles, "person_id")
    if destination.filter:
        frame = frame.filter(F.expr(destination.filter))
    fields = F.to_json(
        F.struct(*[F.col(column).alias(target) for column, target in destination.fields.items()]),
        {"ignoreNullFields": "false"},
    )
    return frame.select(
        "person_id",
        "match_value",
        "segment",
        fields.alias("fields_json"),
        F.sha2(F.concat_ws("\u0001", "match_value", fields), 256).alias("payload_hash"),
    )


def changes(
    desired: DataFrame, state: DataFrame, refused: DataFrame, full: bool = False, max_tries: int = 3
) -> DataFrame:
    """The diff: one row per call to make, with action (upsert or remove), change (add, update, resend (a
    full run), remove or dead_letter), person_id, key, record_id, fields_json, payload_hash, segment and
    tries_before (refusals of this very call in earlier runs). `state`: the destination's ops.sync_state
    rows; `refused`: its ops.sync_rejections rows. A call refused `max_tries` times is a dead letter: kept
    in the diff as change dead_letter (counted, not sent) until its payload changes or a full run."""
    held = state.select(
        "person_id",
        F.col("match_value").alias("held_key"),
        F.col("record_id").alias("held_record"),
        F.col("payload_hash").alias("held_hash"),
        F.col("in_audience").alias("held_in"),
    )
    both = desired.join(held, "person_id", "full_outer")
    wanted = F.col("match_value").isNotNull()
    was_in = F.coalesce(F.col("held_in"), F.lit(False))
    same = was_in & (F.col("held_hash") == F.col("payload_hash"))
    upserts = both.filter(wanted & (F.lit(full) | ~same)).select(
        F.lit("upsert").alias("action"),
        F.when(~was_in, "add").when(same, "resend").otherwise("update").alias("change"),
        "person_id",
        F.col("match_value").alias("key"),
        F.when(F.col("held_key") == F.col("match_value"), F.col("held_record")).alias("record_id"),
        "fields_json",
        "payload_hash",
        "segment",
    )
    leaving = was_in & (~wanted | (F.col("held_key") != F.col("match_value")))
    removals = both.filter(leaving).select(
        F.lit("remove").alias("action"),
        F.lit("remove").alias("change"),
        "person_id",
        F.col("held_key").alias("key"),
        F.col("held_record").alias("record_id"),
        F.lit(None).cast("string").alias("fields_json"),
        F.col("held_hash").alias("payload_hash"),
        F.lit(None).cast("string").alias("segment"),
    )
    tries = refused.groupBy("person_id", "action", "payload_hash").agg(F.count(F.lit(1)).alias("tries_before"))
    calls = upserts.unionByName(removals).join(tries, ["person_id", "action", "payload_hash"], "left")
    calls = calls.withColumn("tries_before", F.coalesce(F.col("tries_before"), F.lit(0)))
    dead = (F.col("tries_before") >= max_tries) & F.lit(not full)
    return calls.withColumn("change", F.when(dead, "dead_letter").otherwise(F.col("change")))


@dataclass
class _Pending:
    """Acknowledgements and refusals not yet committed (at most `sync_commit_every` of them)."""

    state: dict[str, dict] = field(default_factory=dict)
    refused: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.state) + len(self.refused)


class _Writer:
    """Commits acknowledgements to ops.sync_state (MERGE by destination and person) and refusals to
    ops.sync_rejections (append)."""

    def __init__(self, spark: SparkSession, settings: Settings, result: SyncResult, every: int, progress) -> None:
        self.spark, self.settings, self.result, self.every = spark, settings, result, every
        self.progress = progress
        self.pending = _Pending()
        self.journal = journal_dir(settings, result.destination)
        self.journaled: list[Path] = []  # journal files the next commit covers
        self._seq = 0
        self._written = (0, 0)  # pending.state / pending.refused entries already in a journal file

    def journal_batch(self) -> None:
        """Write what the last batch(es) brought back to a journal file (atomically) before anything else is
        sent: a sync killed before its next state commit recovers it from there, so nothing the destination
        acknowledged is sent again."""
        states = list(self.pending.state.values())
        done_states, done_refused = self._written
        fresh = {"state": [_plain(r) for r in states[done_states:]],
                 "refused": [_plain(r) for r in self.pending.refused[done_refused:]]}  # fmt: skip
        if not fresh["state"] and not fresh["refused"]:
            return
        self.journal.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        target = self.journal / f"{self.result.run_id}-{self._seq:08d}.json"
        staged = target.with_suffix(".tmp")
        with staged.open("w") as fh:
            json.dump(fresh, fh)
            fh.flush()
            os.fsync(fh.fileno())
        staged.replace(target)
        self.journaled.append(target)
        self._written = (len(states), len(self.pending.refused))

    def acknowledge(self, row, record_id: str | None, in_audience: bool) -> None:
        self.pending.state[row.person_id] = {
            "destination": self.result.destination,
            "person_id": row.person_id,
            "match_value": row.key,
            "record_id": record_id,
            "payload_hash": row.payload_hash,
            "in_audience": in_audience,
            "segment": row.segment if in_audience else None,
            "gold_version": self.result.gold_version,
            "synced_at": datetime.now(UTC).replace(tzinfo=None),
        }
        self.result.acknowledged += 1

    def refuse(self, row, reason: str) -> None:
        tries = row.tries_before + 1
        self.pending.refused.append({
            "run_id": self.result.run_id, "destination": self.result.destination, "person_id": row.person_id,
            "action": row.action, "payload_hash": row.payload_hash, "tries": tries,
            "dead_letter": tries >= self.settings.sync_max_tries, "reason": reason or "no reason given",
            "rejected_at": datetime.now(UTC).replace(tzinfo=None),
        })  # fmt: skip
        self.result.rejected += 1

    def commit(self, force: bool = False) -> None:
        if not len(self.pending) or (len(self.pending) < self.every and not force):
            return

        pending, self.pending = self.pending, _Pending()
        covered, self.journaled, self._written = self.journaled, [], (0, 0)
        _commit(self.spark, self.settings, list(pending.state.values()), pending.refused)
        for path in covered:  # committed: the journal is not needed any more
            path.unlink(missing_ok=True)
        if self.progress is not None:
            self.progress(self.result)


def _plain(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def journal_dir(settings: Settings, destination: str) -> Path:
    """Where a sync journals acknowledgements between state commits (beside the streams' checkpoints)."""
    return settings.checkpoints / "sync" / destination


def _commit(
    spark: SparkSession, settings: Settings, states: list[dict], refused: list[dict], replay: bool = False
) -> None:
    """MERGE acknowledgements into ops.sync_state (by destination and person: replaying one changes nothing)
    and append refusals to ops.sync_rejections; a `replay` of a journal leaves out refusals already there (a
    kill between the commit and the journal's removal), which a live commit never needs to look up."""
    from delta.tables import DeltaTable

    if states:
        contract = table_contract("ops.sync_state")
        rows = [tuple(r[c] for c in contract.column_names) for r in states]
        source = spark.createDataFrame(rows, contract.schema())
        target = DeltaTable.forPath(spark, str(settings.table_path("ops.sync_state")))
        (
            target.alias("t")
            .merge(source.alias("s"), "t.destination = s.destination AND t.person_id = s.person_id")
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
    if refused:
        contract = table_contract("ops.sync_rejections")
        rows = [tuple(r[c] for c in contract.column_names) for r in refused]
        keys = ["run_id", "destination", "person_id", "action"]
        frame = spark.createDataFrame(rows, contract.schema())
        if replay:
            there = read_table(spark, settings, "ops.sync_rejections").select(*keys)
            frame = frame.join(there, keys, "left_anti")
        frame.write.format("delta").mode("append").save(str(settings.table_path("ops.sync_rejections")))


def recover_journal(spark: SparkSession, settings: Settings, destination: str) -> int:
    """Commit what an interrupted sync of the destination had journaled but not committed; the entries
    recovered. Called at the start of every sync, under its destination lock."""
    folder = journal_dir(settings, destination)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        return 0
    states: dict[str, dict] = {}
    refused: list[dict] = []
    for path in files:  # in the order written: a later acknowledgement of a person wins
        entry = json.loads(path.read_text())
        for row in entry["state"]:
            row["synced_at"] = datetime.fromisoformat(row["synced_at"])
            states[row["person_id"]] = row
        for row in entry["refused"]:
            row["rejected_at"] = datetime.fromisoformat(row["rejected_at"])
            refused.append(row)
    _commit(spark, settings, list(states.values()), refused, replay=True)
    for path in files:
        path.unlink(missing_ok=True)
    log.info("sync %s: recovered %d journaled acknowledgements of an interrupted run", destination, len(states))
    return len(states) + len(refused)


def _member(row) -> Member:
    return Member(row.key, json.loads(row.fields_json) if row.fields_json else {}, row.record_id)


def call(adapter, destination: Destination, members: list[Member], action: str) -> BatchOutcome:
    """One batch's call: upsert, or on leaving remove (or delete, when the destination says on_leave: delete)."""
    if action == "upsert":
        return adapter.upsert(members)
    if destination.on_leave == "delete":
        return adapter.delete([m.key for m in members])
    return adapter.remove(members)


def in_flight(
    adapter, destination: Destination, batches: Iterable[list], action: str, workers: int
) -> Iterator[tuple[list, BatchOutcome]]:
    """(batch, outcome) for each batch of rows, in order, with up to `workers` batches in flight (the
    adapter's rate limiter paces them all; urllib3's pool is shared safely across threads). A failing call
    raises here once the batches before it have been yielded; batches in flight after it are not
    acknowledged, so the next run sends them again."""
    if workers <= 1:
        for rows in batches:
            yield rows, call(adapter, destination, [_member(r) for r in rows], action)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"sync-{destination.name}") as pool:
        window: deque = deque()
        for rows in batches:
            window.append((rows, pool.submit(call, adapter, destination, [_member(r) for r in rows], action)))
            if len(window) >= workers:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()


def _record(destination: Destination, rows: list, outcome: BatchOutcome, writer: _Writer) -> None:
    action = rows[0].action
    for row in rows:
        if row.key in outcome.acknowledged:
            record = outcome.acknowledged[row.key] or row.record_id
            writer.acknowledge(row, None if action == "remove" and destination.on_leave == "delete" else record,
                               in_audience=action == "upsert")  # fmt: skip
        else:
            writer.refuse(row, outcome.rejected.get(row.key, "not acknowledged"))
    writer.journal_batch()
    writer.commit()


def _ordered(frame: DataFrame, action: str) -> Iterator:
    calls = frame.filter((F.col("action") == action) & (F.col("change") != "dead_letter"))
    return calls.toLocalIterator(prefetchPartitions=True)


def _record_run(spark: SparkSession, settings: Settings, result: SyncResult) -> None:
    contract = table_contract("ops.sync_runs")
    values = {
        **{k: getattr(result, k) for k in ("run_id", "destination", "destination_type", "mode", "status",
                                           "gold_version", "audience", "added", "updated", "resent", "removals",
                                           "unchanged", "dead_lettered", "acknowledged", "rejected", "error")},
        "requests": result.stats.requests, "retries": result.stats.retries, "throttled": result.stats.throttled,
        "started_at": result.started_at.replace(tzinfo=None),
        "finished_at": (result.finished_at or datetime.now(UTC)).replace(tzinfo=None),
    }  # fmt: skip
    frame = spark.createDataFrame([tuple(values[c] for c in contract.column_names)], contract.schema())
    frame.write.format("delta").mode("append").save(str(settings.table_path("ops.sync_runs")))


def destination_lock(settings: Settings, name: str):
    """Held alone by a sync of one destination: a second sync of it waits (bounded, then LockTimeout)."""
    import fcntl

    return _flock(settings.lock_dir / f"sync-{name}.lock", fcntl.LOCK_EX, settings.lock_timeout_seconds,
                  f"sync {name}")  # fmt: skip


def sync(
    spark: SparkSession,
    settings: Settings,
    destination: Destination,
    mode: str = "diff",
    policy: RetryPolicy | None = None,
    commit_every: int | None = None,
    progress: Callable[[SyncResult], None] | None = None,
    **transport,
) -> SyncResult:
    """Sync one destination (module doc). Raises what stopped it (auth, the destination unavailable after
    retries, a missing token) after recording the failed run; what was acknowledged before is committed."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
    with ExitStack() as stack:
        stack.enter_context(destination_lock(settings, destination.name))
        stack.enter_context(batch_lock(settings.lock_dir, settings.lock_timeout_seconds, f"sync {destination.name}"))
        recovered = recover_journal(spark, settings, destination.name) if mode != "dry_run" else 0
        version = table_version(spark, settings, "gold.user_segments")
        result = SyncResult(uuid.uuid4().hex, destination.name, destination.type, mode, version, datetime.now(UTC))
        started = time.monotonic()
        adapter = writer = None
        try:
            if mode != "dry_run" and destination.type in ADAPTERS:
                adapter = ADAPTERS[destination.type](destination, credentials(destination), policy or RetryPolicy(),
                                                     **transport)  # fmt: skip
                result.stats = adapter.http.stats
            # materialised once: the diff, the audience count and a file export all read it
            desired = audience(spark, settings, destination, version).localCheckpoint(eager=True)
            state = read_table(spark, settings, "ops.sync_state").filter(F.col("destination") == destination.name)
            refused = read_table(spark, settings, "ops.sync_rejections").filter(
                F.col("destination") == destination.name
            )
            todo = changes(desired, state, refused, mode == "full", settings.sync_max_tries)
            todo = todo.localCheckpoint(eager=True)
            counts = {(r.action, r.change): r["count"] for r in todo.groupBy("action", "change").count().collect()}
            result.audience = desired.count()
            result.added, result.updated = counts.get(("upsert", "add"), 0), counts.get(("upsert", "update"), 0)
            result.resent, result.removals = counts.get(("upsert", "resend"), 0), counts.get(("remove", "remove"), 0)
            result.dead_lettered = counts.get(("upsert", "dead_letter"), 0) + counts.get(("remove", "dead_letter"), 0)
            result.unchanged = result.audience - result.upserts - counts.get(("upsert", "dead_letter"), 0)
            if mode == "dry_run":
                result.status = "dry_run"
                sample = todo.filter(F.col("change") != "dead_letter").orderBy("action", "person_id").limit(3)
                result.samples = [
                    {"person_id": r.person_id, "change": r.change,
                     "fields": json.loads(r.fields_json) if r.fields_json else None}
                    for r in sample.collect()
                ]  # fmt: skip
                return result
            writer = _Writer(spark, settings, result, commit_every or settings.sync_commit_every, progress)
            if destination.type == "file":
                rows = desired.orderBy("match_value").toLocalIterator(prefetchPartitions=True)
                members = (Member(r.match_value, json.loads(r.fields_json)) for r in rows)
                path = write_file(destination, export_folder(settings, destination), members, version)
                result.file = str(path)
                for action in ("remove", "upsert"):
                    for row in _ordered(todo, action):
                        writer.acknowledge(row, None, in_audience=action == "upsert")
                        writer.commit()
            else:
                for action in ("remove", "upsert"):
                    batches = chunks(_ordered(todo, action), destination.batch_size)
                    for rows, outcome in in_flight(adapter, destination, batches, action, destination.concurrency):
                        _record(destination, rows, outcome, writer)
            writer.commit(force=True)
            result.status = "succeeded"
            return result
        except Exception as error:
            if writer is not None:
                writer.commit(force=True)  # what the destination acknowledged stays acknowledged
            result.error = f"{type(error).__name__}: {error}"[:1000]
            raise
        finally:
            if adapter is not None:
                adapter.http.close()
            result.finished_at = datetime.now(UTC)
            result.recovered = recovered
            _record_run(spark, settings, result)
            log.info("sync %s (%s): %s in %.1f s: audience %d, %d upserts, %d removals, %d acknowledged, "
                     "%d refused", destination.name, mode, result.status, time.monotonic() - started,
                     result.audience, result.upserts, result.removals, result.acknowledged,
                     result.rejected)  # fmt: skip


def export_folder(settings: Settings, destination: Destination) -> Path:
    """Where a file destination writes: options.path, relative to the lakehouse root unless absolute."""
    folder = Path(str(destination.options["path"]))
    return folder if folder.is_absolute() else settings.lakehouse / folder


class DestinationErasureFailed(RuntimeError):
    """A destination did not confirm an erasure (refused a key, or was unreachable past the retries)."""


def erase_from_destinations(
    spark: SparkSession,
    settings: Settings,
    destinations: tuple[Destination, ...],
    person_ids: frozenset[str],
    policy: RetryPolicy | None = None,
    **transport,
) -> dict[str, int]:
    """Delete the persons from every destination that may hold them: the vendor's delete call per key, or
    the file export rewritten without them. Which keys: every key ops.sync_state says a destination holds
    (in or out of its audience), and, at every destination in use (a token set, or a file export written),
    the person's current key from silver.profiles, which covers a sync killed after a call and before its
    state commit. Returns {destination: keys erased}. Raises DestinationErasureFailed naming each destination
    that did not confirm (the caller keeps the request pending: the next run calls again; deletes are
    idempotent, a 404 counts as done). Called by erasure before it deletes the ops.sync_state and
    silver.profiles rows, holding the lakehouse lock alone (so no sync runs meanwhile)."""
    if not person_ids:
        return {}
    # an interrupted sync's journal holds acknowledgements (keys included): into ops.sync_state first, so
    # they are reached below and deleted with the person's rows
    journals = settings.checkpoints / "sync"
    for folder in sorted(journals.iterdir()) if journals.is_dir() else []:
        recover_journal(spark, settings, folder.name)
    persons = sorted(person_ids)
    keys: dict[str, set[str]] = {}
    if (settings.table_path("ops.sync_state") / "_delta_log").is_dir():
        held = (
            read_table(spark, settings, "ops.sync_state")
            .filter(F.col("person_id").isin(persons))
            .select("destination", "match_value")
            .distinct()
            .collect()  # one person's keys: a few per destination
        )
        for row in held:
            keys.setdefault(row.destination, set()).add(row.match_value)
    in_use = [
        d for d in destinations
        if credentials(d).token or (d.type == "file" and export_folder(settings, d).is_dir())
    ]  # fmt: skip
    if in_use and (settings.table_path("silver.profiles") / "_delta_log").is_dir():
        profiles = read_table(spark, settings, "silver.profiles").filter(F.col("person_id").isin(persons))
        known = profiles.select("email", "user_id").collect()  # the person's rows: one per person id
        for d in in_use:
            found = {str(getattr(r, d.match_key)).strip() for r in known if getattr(r, d.match_key)}
            if found:
                keys.setdefault(d.name, set()).update(found)
    configured = {d.name: d for d in destinations}
    erased: dict[str, int] = {}
    problems: list[str] = []
    for name, wanted in sorted(keys.items()):
        destination = configured.get(name)
        if destination is None:
            problems.append(f"{name}: holds the person but is no longer in the destinations config")
            continue
        try:
            if destination.type == "file":
                remove_from_file(destination, export_folder(settings, destination), wanted)
                erased[name] = len(wanted)
                continue
            adapter = ADAPTERS[destination.type](destination, credentials(destination), policy or RetryPolicy(),
                                                 **transport)  # fmt: skip
            try:
                outcome = adapter.delete(sorted(wanted))
            finally:
                adapter.http.close()
        except Exception as error:
            problems.append(f"{name}: {type(error).__name__}: {error}")
            continue
        if outcome.rejected:
            problems.append(f"{name}: refused {len(outcome.rejected)} key(s): {next(iter(outcome.rejected.values()))}")
        erased[name] = len(outcome.acknowledged)
    if problems:
        raise DestinationErasureFailed("; ".join(problems))
    return erased
