"""Bronze from a real Kafka broker (KRaft, started by scripts/kafka.sh): nothing lost, nothing twice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from datetime import date
from itertools import pairwise

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.kafka import publish_files
from spark_jobs.settings import REPO_ROOT, Settings
from spark_jobs.simulate import simulate
from tests.faults import kill_mid_batch, start_job
from tests.helpers import assert_each_event_once, bronze_totals, table

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The one user of the broker's SASL listeners (PLAIN), as a site's secret store would hand it to intentlake.
SASL_USER, SASL_PASSWORD = "bronze-reader", "Kafka-Secret-7c41e9"


class Broker:
    """A real broker on free loopback ports, controlled through scripts/kafka.sh: PLAINTEXT, plus SASL_PLAINTEXT
    and SASL_SSL listeners (PLAIN, one user) whose TLS certificate is trusted through tls/ca.pem."""

    def __init__(self, folder) -> None:
        self.port = _free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.secured = {"SASL_PLAINTEXT": f"127.0.0.1:{_free_port()}", "SASL_SSL": f"127.0.0.1:{_free_port()}"}
        self.ca_file = folder / "tls" / "ca.pem"
        self.env = {
            **os.environ,
            "INTENTLAKE_KAFKA_DIR": str(folder),
            "INTENTLAKE_KAFKA_PORT": str(self.port),
            "INTENTLAKE_KAFKA_SASL_PORT": self.secured["SASL_PLAINTEXT"].rpartition(":")[2],
            "INTENTLAKE_KAFKA_SASL_SSL_PORT": self.secured["SASL_SSL"].rpartition(":")[2],
            "INTENTLAKE_KAFKA_SASL_USERNAME": SASL_USER,
            "INTENTLAKE_KAFKA_SASL_PASSWORD": SASL_PASSWORD,
        }

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


def _client_env(kafka: Broker, protocol: str, topic: str, password: str) -> dict[str, str]:
    """The INTENTLAKE_* variables a site sets to reach this broker through one of its SASL listeners."""
    env = {
        "INTENTLAKE_KAFKA_BOOTSTRAP": kafka.secured[protocol],
        "INTENTLAKE_KAFKA_TOPIC": topic,
        "INTENTLAKE_KAFKA_SECURITY_PROTOCOL": protocol,
        "INTENTLAKE_KAFKA_SASL_MECHANISM": "PLAIN",
        "INTENTLAKE_KAFKA_SASL_USERNAME": SASL_USER,
        "INTENTLAKE_KAFKA_SASL_PASSWORD": password,
    }
    if protocol == "SASL_SSL":  # the broker's self-signed certificate, as a PEM CA file
        env |= {
            "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_LOCATION": str(kafka.ca_file),
            "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_TYPE": "PEM",
        }
    return env


def _secured(settings: Settings, kafka: Broker, protocol: str, topic: str, password: str) -> Settings:
    """The test's settings with those variables applied (INTENTLAKE_<FIELD> -> field)."""
    env = _client_env(kafka, protocol, topic, password)
    return replace(settings, **{name.removeprefix("INTENTLAKE_").lower(): value for name, value in env.items()})


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_bronze_reads_a_topic_through_sasl_with_the_right_credentials(spark, settings, kafka, tmp_path, protocol):
    settings = _secured(settings, kafka, protocol, f"events-{protocol.lower()}", SASL_PASSWORD)
    summary = simulate(tmp_path / "outbox", settings.truth, events=300, seed=41, duplicate_rate=0.05,
                       malformed_rate=0.02, lines_per_file=400)  # fmt: skip
    assert publish_files(spark, settings, sorted((tmp_path / "outbox").glob("*.ndjson"))) == summary.lines

    bronze.run(spark, settings, source="kafka")  # availableNow
    assert_each_event_once(spark, settings, events=summary.events, malformed=summary.malformed, lines=summary.lines)
    topic = f"events-{protocol.lower()}"
    assert table(spark, settings, "bronze.events").filter(f"source_file LIKE '{topic}/%'").count() == summary.events


# The simulator's producer, then bronze, as an operator runs them, in one process: everything either prints
# (Python, Spark and Kafka client logs) is captured, and the failed producer Spark caches ends with it.
DENIED_RUN = """
from spark_jobs.cli import main
for argv in (["simulate", "--sink", "kafka", "--events", "20"], ["run", "bronze", "--source", "kafka"]):
    try:
        main(argv)
        print("outcome:", argv[0], "succeeded")
    except Exception as error:
        print("outcome:", argv[0], "raised", type(error).__name__, " ".join(str(error).split())[:600])
"""


def test_a_wrong_password_fails_naming_authentication_and_never_shows_the_password(settings, kafka):
    wrong = "Not-The-Password-0d93"
    env = {**os.environ, **_client_env(kafka, "SASL_PLAINTEXT", "events-denied", wrong),
           "INTENTLAKE_LAKEHOUSE": str(settings.lakehouse), "INTENTLAKE_SHUFFLE_PARTITIONS": "2"}  # fmt: skip
    job = subprocess.run([sys.executable, "-c", DENIED_RUN], env=env, capture_output=True, text=True, timeout=300)
    output = job.stdout + job.stderr
    outcomes = [line.split(maxsplit=3)[1:] for line in job.stdout.splitlines() if line.startswith("outcome:")]
    assert [(command, result) for command, result, _ in outcomes] == [("simulate", "raised"), ("run", "raised")], (
        output[-3000:]
    )
    assert all("Authentication failed" in message for *_, message in outcomes), outcomes
    assert wrong not in output


def _collector(settings, broker: str, topic: str, port: int, key: str) -> subprocess.Popen:
    """`intentlake serve collector` into the topic, in a process group of its own (kill -9 takes all of it)."""
    env = {**os.environ, "INTENTLAKE_LAKEHOUSE": str(settings.lakehouse), "INTENTLAKE_COLLECTOR_SINK": "kafka",
           "INTENTLAKE_KAFKA_BOOTSTRAP": broker, "INTENTLAKE_KAFKA_TOPIC": topic,
           "INTENTLAKE_COLLECTOR_WRITE_KEYS": key, "INTENTLAKE_MAX_EVENT_AGE": "3650 days"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "spark_jobs.cli", "serve", "collector", "--port", str(port)],
                              env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                              start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise AssertionError("the collector did not listen within 60 s")


def test_a_collector_killed_during_a_burst_loses_no_acknowledged_event_and_bronze_holds_each_once(
    spark, settings, broker
):
    import base64
    import json
    import signal
    import threading
    import urllib.error
    import urllib.request

    from confluent_kafka import Consumer

    topic, key, port = "collector-burst", "wk-burst-0123456789", _free_port()
    auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
    batches = [[{"type": "track", "event": "Product Viewed", "messageId": f"burst-{b}-{i}", "anonymousId": f"a-{i % 7}",
                 "timestamp": "2026-12-05T10:00:00Z", "properties": {"product_id": f"sku-{i}"}} for i in range(50)]
               for b in range(60)]  # fmt: skip
    acknowledged: set[str] = set()
    pending = list(range(len(batches)))

    def send(index: int) -> bool:
        body = json.dumps({"batch": batches[index]}).encode()
        headers = {"Authorization": auth, "Content-Type": "application/json"}
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/batch", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert json.load(answer)["accepted"] == 50
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False  # not acknowledged: the sender sends it again
        acknowledged.update(m["messageId"] for m in batches[index])
        return True

    server = _collector(settings, broker, topic, port, key)
    lock, sent_before_kill = threading.Lock(), []

    def burst() -> None:
        for index in list(pending):
            if send(index):
                with lock:
                    pending.remove(index)
                    sent_before_kill.append(index)

    sender = threading.Thread(target=burst)
    sender.start()
    while len(sent_before_kill) < 15:
        time.sleep(0.01)
    os.killpg(server.pid, signal.SIGKILL)  # mid-burst: the request in flight dies with it
    server.wait()
    sender.join()
    assert 15 <= len(acknowledged) // 50 < len(batches)  # the kill cut the burst short

    server = _collector(settings, broker, topic, port, key)  # restarted; the sender retries what was not acknowledged
    try:
        for index in list(pending):
            assert send(index)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    consumer = Consumer({"bootstrap.servers": broker, "group.id": "burst-check", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen: list[str] = []
    idle = time.monotonic()
    while time.monotonic() - idle < 5:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            seen.append(json.loads(message.value())["messageId"])
            idle = time.monotonic()
    consumer.close()
    everything = {m["messageId"] for batch in batches for m in batch}
    assert acknowledged == everything and set(seen) == everything  # no acknowledged event lost
    assert len(seen) >= len(everything)  # a batch in flight at the kill may be there twice ...

    kafka_settings = replace(settings, kafka_bootstrap=broker, kafka_topic=topic, max_event_age="3650 days")
    bronze.run(spark, kafka_settings, source="kafka")
    assert table(spark, kafka_settings, "bronze.events").count() == len(everything)  # ... bronze holds it once
