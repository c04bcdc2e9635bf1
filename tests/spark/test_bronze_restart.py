"""Exactly-once: a bronze stream stopped or crashed mid-way and restarted writes every event once."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.simulate import simulate
from tests.helpers import assert_each_event_once, table

pytestmark = pytest.mark.spark


def _wait_for_batch(query, batch_id: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p["batchId"] >= batch_id and p["numInputRows"] > 0 for p in query.recentProgress):
            return
        if query.exception():
            raise query.exception()
        time.sleep(0.2)
    raise TimeoutError(f"batch {batch_id} did not complete in {timeout_s}s")


@pytest.fixture
def landing(settings):
    settings = replace(settings, max_files_per_trigger=1)
    summary = simulate(settings.landing, settings.truth, events=1200, seed=5, duplicate_rate=0.05,
                       malformed_rate=0.02, lines_per_file=300)  # fmt: skip
    assert summary.files >= 4
    return settings, summary


def test_stopped_after_the_first_batch_and_restarted_nothing_is_written_twice_or_missed(spark, landing):
    settings, summary = landing
    query = bronze.run(spark, settings, trigger="1 second", wait=False)
    _wait_for_batch(query, 0)
    query.stop()
    assert 0 < table(spark, settings, "bronze.events").count() < summary.events  # really stopped part-way

    bronze.run(spark, settings, trigger="availableNow")  # restart on the same checkpoint
    assert_each_event_once(spark, settings, events=summary.events, malformed=summary.malformed, lines=summary.lines)


def test_a_batch_replayed_after_a_crash_before_its_checkpoint_commit_is_not_written_again(spark, landing):
    settings, summary = landing
    bronze.run(spark, settings, trigger="availableNow")
    commits = sorted((settings.checkpoint("bronze") / "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    rows_before = table(spark, settings, "bronze.events").count()
    # A crash after the Delta writes but before Spark recorded the batch as done: the batch runs again.
    commits[-1].unlink()
    (commits[-1].parent / f".{commits[-1].name}.crc").unlink(missing_ok=True)
    bronze.run(spark, settings, trigger="availableNow")
    assert commits[-1].exists()  # Spark really ran the batch again ...
    assert table(spark, settings, "bronze.events").count() == rows_before  # ... and it wrote nothing twice
    assert_each_event_once(spark, settings, events=summary.events, malformed=summary.malformed, lines=summary.lines)
