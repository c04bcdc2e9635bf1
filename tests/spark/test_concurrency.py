"""Erasure and maintenance running while the streams run: nobody comes back, nothing is lost.

One simulated lakehouse is prepared once (bronze, silver and gold caught up); each test works on a copy.
- An erasure while silver is behind bronze: silver's next batches read the person's events from bronze
  versions committed before the DELETE; they must not bring the person back (the suppression list).
- An erasure at the same time as a silver batch that holds the person's new events: the lakehouse lock
  puts one after the other, and the person is gone from every layer at the end.
- OPTIMIZE and VACUUM of the tables silver reads and MERGEs into, while silver's batches commit: the lock
  puts each between two batches; no commit conflicts, and the tables equal those of a run without them.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from pyspark.sql import functions as F

from spark_jobs import erasure, maintenance
from spark_jobs.bronze import job as bronze
from spark_jobs.gold import job as gold
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from tests.faults import _batch_in_flight
from tests.helpers import rows, table

pytestmark = pytest.mark.spark

NOW = datetime(2026, 11, 3, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    """~600 simulated events: bronze in several commits (kept aside as `bronze_only`), then silver and gold."""
    root = tmp_path_factory.mktemp("concurrency")
    settings = replace(Settings.from_env().with_root(root / "lakehouse"), shuffle_partitions=2, max_files_per_trigger=2)
    simulate(settings.landing, settings.truth, events=600, seed=11, lines_per_file=100)
    bronze.run(spark, settings)
    shutil.copytree(settings.lakehouse, root / "bronze_only")
    silver.run(spark, settings)
    gold.run(spark, settings)
    return SimpleNamespace(caught_up=settings, bronze_only=settings.with_root(root / "bronze_only"))


def _copy(source: Settings, tmp_path) -> Settings:
    """A copy of a prepared lakehouse (Delta tables and checkpoints move with their root)."""
    shutil.copytree(source.lakehouse, tmp_path / "lakehouse")
    return source.with_root(tmp_path / "lakehouse")


def _a_person(spark, settings: Settings):
    """A logged-in person with a device: (user_id, anonymous_id)."""
    row = (
        table(spark, settings, "silver.sessions")
        .where("user_id IS NOT NULL")
        .orderBy("session_id")
        .select("user_id", "anonymous_id")
        .first()
    )
    return row.user_id, row.anonymous_id


def _append_more_of(spark, settings: Settings, user_id: str, n: int) -> None:
    """New events of the person in bronze.events (a new commit silver has not read): their stored events
    again under new ids, an hour later and received now."""
    events = table(spark, settings, "bronze.events").where(F.col("user_id") == user_id).limit(n)
    later = (
        events.withColumn("event_id", F.concat(F.lit("again-"), "event_id"))
        .withColumn("occurred_at", F.col("occurred_at") + F.expr("INTERVAL 1 HOUR"))
        .withColumn("received_at", F.current_timestamp())
    )
    later.write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))


def _nothing_left(spark, settings: Settings, ids: erasure.Identifiers) -> None:
    for name, condition in erasure.conditions(ids).items():
        assert table(spark, settings, name).where(condition).count() == 0, name


def _silver_with_a_batch_in_flight(spark, settings: Settings) -> tuple[threading.Thread, list[BaseException]]:
    """silver.run in a thread, returned once one of its batches is in flight; its failure lands in the list."""
    failures: list[BaseException] = []

    def stream() -> None:
        try:
            silver.run(spark, settings)
        except BaseException as exc:  # surfaced by the caller
            failures.append(exc)

    runner = threading.Thread(target=stream)
    runner.start()
    deadline = time.monotonic() + 300
    while _batch_in_flight(settings.checkpoint("silver")) is None and runner.is_alive():
        assert time.monotonic() < deadline, "silver never had a batch in flight"
        time.sleep(0.02)
    return runner, failures


def test_an_erasure_while_silver_is_behind_bronze_does_not_come_back_through_the_stream(spark, prepared, tmp_path):
    settings = _copy(prepared.caught_up, tmp_path)
    user_id, _ = _a_person(spark, settings)
    _append_more_of(spark, settings, user_id, 6)  # bronze now holds a new visit; silver has not read it yet
    ids = erasure.resolve(spark, settings, "user_id", user_id)
    erasure.file_request(spark, settings, "user_id", user_id, NOW)
    erasure.process_erasures(spark, settings, NOW)
    _nothing_left(spark, settings, ids)
    silver.run(spark, settings)  # reads the bronze versions that held the visit before the DELETE
    gold.run(spark, settings)
    _nothing_left(spark, settings, ids)
    history = table(spark, settings, "gold.user_segments_history")
    assert history.where(history.person_id.isin(sorted(ids.person_ids))).count() == 0


def test_an_erasure_racing_a_silver_batch_leaves_nothing_of_the_person(spark, prepared, tmp_path):
    settings = _copy(prepared.caught_up, tmp_path)
    user_id, _ = _a_person(spark, settings)
    _append_more_of(spark, settings, user_id, 40)
    ids = erasure.resolve(spark, settings, "user_id", user_id)
    erasure.file_request(spark, settings, "user_id", user_id, NOW)
    runner, failures = _silver_with_a_batch_in_flight(spark, settings)
    erasure.process_erasures(spark, settings, NOW)  # while the batch runs: waits for it, then deletes
    runner.join(timeout=600)
    assert not failures, failures
    silver.run(spark, settings)
    gold.run(spark, settings)
    _nothing_left(spark, settings, ids)


def test_maintenance_while_silver_streams_leaves_the_tables_of_an_uninterrupted_run(spark, prepared, tmp_path):
    # silver in a few batches (bronze holds 12 data files: 3 batches of 4), so maintenance lands between; one
    # hash key for both, as silver makes one per lakehouse when none is set (person ids are keyed)
    batches = {"silver_max_files_per_trigger": 4, "hash_key": "maintenance-test-hash-key-0123456789abcdef"}
    racing = replace(_copy(prepared.bronze_only, tmp_path / "racing"), **batches)
    reference = replace(_copy(prepared.bronze_only, tmp_path / "reference"), **batches)
    silver.run(spark, reference)
    runner, failures = _silver_with_a_batch_in_flight(spark, racing)
    commits = racing.checkpoint("silver") / "commits"
    during = 0
    while runner.is_alive():  # each waits for the batch in flight, then holds the lock alone
        done = len(list(commits.glob("[0-9]*")))
        for name in ("silver.sessions", "silver.micro_moments", "silver.identity_edges", "bronze.events"):
            maintenance.optimize(spark, racing, name)
            maintenance.vacuum(spark, racing, name)
        during += 1
        # one round per batch, as a maintenance schedule would: back to back, the rounds would starve the
        # stream (flock has no queue; a waiting batch polls for the lock)
        while runner.is_alive() and len(list(commits.glob("[0-9]*"))) <= done:
            time.sleep(0.05)
    runner.join()
    assert not failures, failures
    assert during >= 1
    runs = table(spark, racing, "ops.pipeline_runs").where("job = 'silver'")
    assert runs.select("batch_id").distinct().count() > 1  # maintenance had batches to land between
    tables = ("silver.sessions", "silver.micro_moments", "silver.late_events", "silver.identity_map",
              "silver.identity_edges")  # fmt: skip
    for name in tables:
        assert rows(spark, racing, name) == rows(spark, reference, name), name
