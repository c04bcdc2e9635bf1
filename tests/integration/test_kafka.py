"""Bronze from a real Kafka broker (KRaft, started by scripts/kafka.sh): nothing lost, nothing twice."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import replace
from datetime import date
from itertools import pairwise

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.kafka import publish_files
from spark_jobs.settings import REPO_ROOT
from spark_jobs.simulate import simulate
from tests.faults import kill_mid_batch, start_job
from tests.helpers import assert_each_event_once, bronze_totals, table

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A real broker on a free loopback port, controlled through scripts/kafka.sh."""

    def __init__(self, folder) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "INTENTLAKE_KAFKA_DIR": str(folder), "INTENTLAKE_KAFKA_PORT": str(self.port)}

    def _script(self, action: str) -> None:
        subprocess.run([str(REPO_ROOT / "scripts" / "kafka.sh"), action], env=self.env, check=True, timeout=300)

    def up(self) -> None:
        self._script("up")

    def down(self) -> None:
        self._script("down")


@pytest.fixture(scope="module")
def kafka(tmp_path_factory):
    """One broker for this module; stopped afterwards."""
    broker = Broker(tmp_path_factory.mktemp("kafka"))
    broker.up()
    yield broker
    broker.down()


@pytest.fixture
def broker(kafka):
    return kafka.bootstrap


def test_events_published_to_kafka_land_in_bronze_exactly_once(spark, settings, broker, tmp_path):
    settings = replace(settings, kafka_bootstrap=broker, kafka_topic="events-once", max_offsets_per_trigger=500)
    summary = simulate(tmp_path / "outbox", settings.truth, events=1500, seed=9, duplicate_rate=0.05,
                       malformed_rate=0.02, lines_per_file=400)  # fmt: skip
    assert publish_files(spark, settings, sorted((tmp_path / "outbox").glob("*.ndjson"))) == summary.lines

    query = bronze.run(spark, settings, trigger="1 second", wait=False, source="kafka")
    deadline_batches = 0
    while not any(p["numInputRows"] > 0 for p in query.recentProgress):  # stop after the first real batch
        query.awaitTermination(0.5)
        deadline_batches += 1
        assert deadline_batches < 240, "no batch from Kafka within 2 minutes"
    query.stop()
    assert table(spark, settings, "bronze.events").count() < summary.events

    bronze.run(spark, settings, source="kafka")  # restart on the same checkpoint and catch up
    assert_each_event_once(spark, settings, events=summary.events, malformed=summary.malformed, lines=summary.lines)
    events = table(spark, settings, "bronze.events")
    assert events.filter("source_file LIKE 'events-once/%/%'").count() == summary.events  # topic/partition/offset
    # each batch records the offsets it read; together they cover the topic without gaps or overlaps
    runs = table(spark, settings, "ops.pipeline_runs").filter("job = 'bronze-kafka'").orderBy("batch_id").collect()
    by_partition: dict[str, list[tuple[int, int]]] = {}
    for run in runs:
        for part, span in (run.source_offsets or {}).items():
            by_partition.setdefault(part, []).append(tuple(map(int, span.split(".."))))
    assert set(by_partition) <= {"events-once/0", "events-once/1"}
    for spans in by_partition.values():
        spans.sort()
        assert spans[0][0] == 0 and all(later[0] == earlier[1] + 1 for earlier, later in pairwise(spans))
    assert sum(spans[-1][1] + 1 for spans in by_partition.values()) == summary.lines
    assert runs[-1].max_event_time is not None and runs[-1].watermark is not None

    bronze.run(spark, settings, source="kafka")  # nothing new on the topic: nothing written
    assert table(spark, settings, "bronze.events").count() == summary.events


def _publish_day(spark, settings, tmp_path, seed, events=1500, day=date(2026, 11, 2)):
    outbox = tmp_path / f"outbox-{seed}"
    summary = simulate(outbox, tmp_path / f"truth-{seed}", events=events, seed=seed, duplicate_rate=0.05,
                       malformed_rate=0.02, lines_per_file=400, day=day)  # fmt: skip
    assert publish_files(spark, settings, sorted(outbox.glob("*.ndjson"))) == summary.lines
    return summary


def test_bronze_from_kafka_killed_mid_batch_and_restarted_holds_each_event_once(spark, settings, broker, tmp_path):
    settings = replace(settings, kafka_bootstrap=broker, kafka_topic="events-kill")
    summary = _publish_day(spark, settings, tmp_path, seed=13, events=3000)
    job = start_job(settings, "run", "bronze", "--source", "kafka", "--trigger", "1 second", extra_env={
        "INTENTLAKE_KAFKA_BOOTSTRAP": broker, "INTENTLAKE_KAFKA_TOPIC": "events-kill",
        "INTENTLAKE_MAX_OFFSETS_PER_TRIGGER": "300",
    })  # fmt: skip
    assert kill_mid_batch(job, settings.checkpoint("bronze-kafka")) >= 1
    bronze.run(spark, settings, source="kafka")
    assert_each_event_once(spark, settings, events=summary.events, malformed=summary.malformed, lines=summary.lines)


def test_broker_restarted_twice_while_events_flow_loses_and_duplicates_nothing(spark, settings, kafka, tmp_path):
    settings = replace(settings, kafka_bootstrap=kafka.bootstrap, kafka_topic="events-restarts",
                       max_offsets_per_trigger=400)  # fmt: skip
    days = [_publish_day(spark, settings, tmp_path, seed=31)]
    query = bronze.run(spark, settings, trigger="1 second", wait=False, source="kafka")
    try:
        for seed, day in ((32, date(2026, 11, 3)), (33, date(2026, 11, 4))):  # the next days, as in production
            kafka.down()
            time.sleep(2)  # the stream sees the broker gone
            kafka.up()
            days.append(_publish_day(spark, settings, tmp_path, seed=seed, day=day))
        lines = sum(d.lines for d in days)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert query.exception() is None, query.exception()
            if bronze_totals(spark, settings).i >= lines:
                break
            time.sleep(1)
    finally:
        query.stop()
    events, malformed = sum(d.events for d in days), sum(d.malformed for d in days)
    assert_each_event_once(spark, settings, events=events, malformed=malformed, lines=lines)
