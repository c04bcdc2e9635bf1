"""Bronze from a real Kafka broker (KRaft, started by scripts/kafka.sh): nothing lost, nothing twice."""

from __future__ import annotations

import os
import socket
import subprocess
from dataclasses import replace

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.kafka import publish_files
from spark_jobs.settings import REPO_ROOT
from spark_jobs.simulate import simulate

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A real broker on a free loopback port for this module; stopped afterwards."""
    port = _free_port()
    env = {**os.environ, "INTENTLAKE_KAFKA_DIR": str(tmp_path_factory.mktemp("kafka")),
           "INTENTLAKE_KAFKA_PORT": str(port)}  # fmt: skip
    script = str(REPO_ROOT / "scripts" / "kafka.sh")
    subprocess.run([script, "up"], env=env, check=True, timeout=300)
    yield f"127.0.0.1:{port}"
    subprocess.run([script, "down"], env=env, check=True, timeout=120)


def _table(spark, settings, name):
    return spark.read.format("delta").load(str(settings.table_path(name)))


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
    assert _table(spark, settings, "bronze.events").count() < summary.events

    bronze.run(spark, settings, source="kafka")  # restart on the same checkpoint and catch up
    events = _table(spark, settings, "bronze.events")
    assert events.count() == events.select("event_id").distinct().count() == summary.events
    assert _table(spark, settings, "bronze.quarantine").count() == summary.malformed
    runs = _table(spark, settings, "ops.pipeline_runs")
    totals = runs.selectExpr("sum(input_rows) i", "sum(accepted_rows) a", "sum(quarantined_rows) q",
                             "sum(duplicate_rows) d").first()  # fmt: skip
    assert totals.i == summary.lines == totals.a + totals.q + totals.d
    assert events.filter("source_file LIKE 'events-once/%/%'").count() == summary.events  # topic/partition/offset

    bronze.run(spark, settings, source="kafka")  # nothing new on the topic: nothing written
    assert _table(spark, settings, "bronze.events").count() == summary.events
