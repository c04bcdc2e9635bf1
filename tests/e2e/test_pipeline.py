"""End to end: a simulated day through bronze -> silver -> gold, checked against the ground truth."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from spark_jobs.bronze import job as bronze
from spark_jobs.gold import job as gold
from spark_jobs.settings import REPO_ROOT, TABLES
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from tests.helpers import bronze_totals, portable_rows, table

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def day(spark, tmp_path_factory):
    from spark_jobs.settings import Settings

    settings = replace(Settings.from_env().with_root(tmp_path_factory.mktemp("e2e") / "lakehouse"),
                       shuffle_partitions=2, max_files_per_trigger=4)  # fmt: skip
    # the realistic mix: Snowplow, server-side track calls, shared client session ids, custom events
    summary = simulate(settings.landing, settings.truth, events=4000, seed=3, duplicate_rate=0.03,
                       late_rate=0.05, malformed_rate=0.01, lines_per_file=500, realistic=True)  # fmt: skip
    for layer in (bronze, silver, gold):
        layer.run(spark, settings)
    return settings, summary


def test_every_input_line_is_accepted_quarantined_or_counted_as_a_duplicate(spark, day):
    settings, summary = day
    totals = bronze_totals(spark, settings)
    bronze_rows = table(spark, settings, "bronze.events").count()
    quarantined = table(spark, settings, "bronze.quarantine").count()
    assert totals.i == summary.lines == bronze_rows + quarantined + totals.d
    assert (bronze_rows, totals.d) == (summary.events, summary.duplicates)
    by_reason = {
        r.reason: r["count"] for r in table(spark, settings, "bronze.quarantine").groupBy("reason").count().collect()
    }
    assert by_reason == summary.malformed_by_reason


def test_sessions_equal_the_simulators_true_boundaries(spark, day):
    settings, summary = day
    with open(settings.truth / "sessions.csv") as fh:
        truth = {(r["anonymous_id"], r["start"], r["end"], int(r["event_count"])) for r in csv.DictReader(fh)}
    ours = {
        (r.anonymous_id, r.start, r.end, r.event_count)
        for r in table(spark, settings, "silver.sessions")
        .selectExpr("anonymous_id", "date_format(session_start, \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\") start",
                    "date_format(session_end, \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\") end", "event_count")
        .collect()
    }  # fmt: skip
    assert len(truth) == summary.sessions
    # A hand-checked slice first (the three earliest sessions), then every session.
    assert sorted(ours, key=lambda s: (s[1], s[0]))[:3] == sorted(truth, key=lambda s: (s[1], s[0]))[:3]
    agreeing = len(ours & truth)
    precision, recall = agreeing / len(ours), agreeing / len(truth)
    print(f"session boundaries vs truth: precision {precision:.4f}, recall {recall:.4f} ({len(truth)} sessions)")
    assert (precision, recall) == (1.0, 1.0), sorted(ours ^ truth)[:5]


def test_conversions_scores_and_segments(spark, day):
    settings, summary = day
    sessions = table(spark, settings, "silver.sessions")
    assert sessions.filter("converted").count() == summary.conversions
    scores = table(spark, settings, "gold.session_scores")
    assert scores.count() == sessions.count()
    assert scores.filter("intent_score < 0 OR intent_score > 100").count() == 0
    segments = table(spark, settings, "gold.user_segments")
    assert segments.count() == sessions.select("person_id").distinct().count()
    # the gold run kept the history: each person's open spell is their current segment
    spells = table(spark, settings, "gold.user_segments_history").filter("valid_to IS NULL")
    assert sorted(spells.select("person_id", "segment").collect()) == sorted(
        segments.select("person_id", "segment").collect()
    )
    rates = {
        r.segment: r.rate
        for r in scores.join(sessions.select("session_id", "converted"), "session_id")
        .groupBy("segment").agg(F.avg(F.col("converted").cast("double")).alias("rate")).collect()
    }  # fmt: skip
    assert rates["High Intent"] > 5 * rates["Standard"]  # the score separates buyers from browsers


def test_evaluate_matches_every_session_to_the_truth_and_the_score_ranks_buyers_first(spark, day):
    settings, summary = day
    from spark_jobs.gold.evaluate import evaluate

    result = evaluate(spark, settings)
    print(f"evaluate: AUC {result.auc_converted:.4f}, High Intent precision {result.high_intent_precision:.4f} "
          f"recall {result.high_intent_recall:.4f}, confusion {result.confusion}")  # fmt: skip
    assert result.matched_sessions == result.scored_sessions == summary.sessions
    assert sum(n for row in result.confusion.values() for n in row.values()) == summary.sessions
    assert result.model_versions == ["weighted-v1"]
    assert result.auc_converted > 0.9  # a purchase needs a cart add, which the weighted model rewards
    buyers = sum(result.confusion.get("high_intent_buyer", {}).values()) / result.matched_sessions
    assert result.high_intent_precision > 2 * buyers  # the segment concentrates buyers well above their base rate
    assert result.high_intent_recall > 0.6


def test_a_second_run_with_no_new_input_changes_no_table(spark, day):
    settings, _ = day
    from delta.tables import DeltaTable

    def versions():
        return {t: DeltaTable.forPath(spark, str(settings.table_path(t))).history(1).first().version for t in TABLES}

    before = versions()
    for layer in (bronze, silver, gold):
        layer.run(spark, settings)
    assert versions() == before


def test_the_tables_open_in_another_delta_reader(day):
    settings, summary = day
    script = (
        "import json, os, sys\n"
        "from deltalake import DeltaTable\n"
        "counts = {t: DeltaTable(p).to_pyarrow_table().num_rows for t, p in json.loads(sys.argv[1]).items()}\n"
        "print(json.dumps(counts), flush=True)\n"
        "os._exit(0)  # delta-rs may abort in its own teardown at interpreter exit\n"
    )
    paths = {t: str(settings.table_path(t)) for t in TABLES}
    out = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], capture_output=True, text=True, check=True)
    counts = json.loads(out.stdout)
    assert counts["bronze.events"] == summary.events
    assert counts["silver.sessions"] == summary.sessions


# The same jobs the `day` fixture runs, in a process of its own whose settings (from the environment) name the
# cluster's master: a Spark session cannot change its master, and the suite's session is local.
_ON_A_CLUSTER = """
from spark_jobs.bronze import job as bronze
from spark_jobs.gold import job as gold
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.spark import build_spark

settings = Settings.from_env()
spark = build_spark(settings, app_name="intentlake-on-a-cluster")
for layer in (bronze, silver, gold):
    layer.run(spark, settings)
executors = spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1  # the driver is listed too
print(f"master {spark.sparkContext.master}, executors {executors}", flush=True)
spark.stop()
"""


@pytest.fixture
def cluster(tmp_path):
    """A Spark standalone cluster from scripts/spark_cluster.sh: a master and two workers, each its own JVM."""
    with socket.socket() as probe:  # a free port for the master (its web UIs take the next three)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = os.environ | {"INTENTLAKE_SPARK_CLUSTER_DIR": str(tmp_path / "cluster"),
                        "INTENTLAKE_SPARK_CLUSTER_PORT": str(port)}  # fmt: skip
    script = str(REPO_ROOT / "scripts" / "spark_cluster.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        settings = subprocess.run([script, "env"], env=env, capture_output=True, text=True, check=True).stdout
        yield (
            tmp_path / "cluster",
            dict(line.removeprefix("export ").split("=", 1) for line in settings.splitlines() if line.strip()),
        )
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)


def test_a_standalone_cluster_builds_the_same_tables_as_the_local_run(spark, day, cluster, tmp_path):
    settings, _ = day
    home, pointed = cluster
    lakehouse = tmp_path / "on-cluster"
    shutil.copytree(settings.landing, lakehouse / "landing")  # the same input files, times kept
    if (settings.lakehouse / "_secrets").exists():  # the same hash key (person ids, keyed identifiers)
        shutil.copytree(settings.lakehouse / "_secrets", lakehouse / "_secrets")
    env = os.environ | pointed | {
        "INTENTLAKE_LAKEHOUSE": str(lakehouse),
        "INTENTLAKE_SHUFFLE_PARTITIONS": str(settings.shuffle_partitions),
        "INTENTLAKE_MAX_FILES_PER_TRIGGER": str(settings.max_files_per_trigger),
    }  # fmt: skip
    run = subprocess.run([sys.executable, "-c", _ON_A_CLUSTER], env=env, cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=1500)  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"master {pointed['INTENTLAKE_SPARK_MASTER']}, executors 2" in run.stdout
    for worker in ("worker-1", "worker-2"):  # each worker ran an executor of the application
        assert list((home / worker).glob("app-*/*/stderr")), f"{worker} ran no executor"

    on_cluster = settings.with_root(lakehouse)
    made = [name for name in TABLES if (settings.table_path(name) / "_delta_log").exists()]
    assert {"bronze.events", "silver.sessions", "gold.session_scores", "gold.user_segments"} <= set(made)
    for name in made:
        here, there = portable_rows(spark, settings, name), portable_rows(spark, on_cluster, name)
        assert there == here, f"{name} differs from the local run"
