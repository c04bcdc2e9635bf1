"""The command line: a bad config stops `run all` before any data moves; `run all --trigger` follows the landing
zone in chained cycles; sql and status answer."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest
from pyspark.sql import functions as F

from spark_jobs import operations as op
from spark_jobs.cli import main
from spark_jobs.settings import REPO_ROOT, Settings
from spark_jobs.silver.sessions import BOT
from spark_jobs.simulate import simulate
from tests.helpers import table

pytestmark = pytest.mark.spark


@pytest.fixture
def env(monkeypatch, settings, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", config)
    monkeypatch.setenv("INTENTLAKE_LAKEHOUSE", str(settings.lakehouse))
    monkeypatch.setenv("INTENTLAKE_CONFIG_DIR", str(config))
    monkeypatch.setenv("INTENTLAKE_SHUFFLE_PARTITIONS", "2")
    simulate(settings.landing, settings.truth, events=300, seed=2, lines_per_file=150)  # two files
    return settings, config


def test_an_invalid_rule_stops_run_all_before_any_data_moves(spark, env, capsys):
    settings, config = env
    segments = config / "segments.yaml"
    segments.write_text(segments.read_text().replace("page_depth >= 3", "page_depth >= 'three' AND"))
    assert main(["run", "all"]) == 2
    err = capsys.readouterr().err
    assert "segments.yaml" in err and "rule 'High Intent'" in err
    assert spark.read.format("delta").load(str(settings.table_path("bronze.events"))).count() == 0
    assert not (settings.checkpoints / "bronze").exists()


def test_run_all_follows_the_landing_zone_then_sql_and_status(spark, env, capsys, tmp_path):
    settings, _ = env  # the fixture points the CLI at a fresh lakehouse with 300 simulated events
    # `run all --trigger`'s loop: the second file lands once the first cycle is through gold; the next cycle
    # takes it through every layer, and a cycle with nothing new runs bronze only (silver and gold skipped)
    *_, last = sorted(settings.landing.glob("events-*.ndjson"))
    held = shutil.move(last, tmp_path / last.name)
    layers: list[str] = []
    lakehouse = op.Lakehouse(replace(Settings.from_env(), trigger="5 seconds"), spark)  # each layer: availableNow
    for step in op.follow_pipeline(lakehouse, 0.2, stop=lambda: layers[-2:] == ["bronze", "bronze"]):
        layers.append(getattr(step, "layer", "features"))
        if layers == ["bronze", "silver", "features", "gold"]:
            os.utime(shutil.move(held, last))  # arrives now, after the files the first cycle read
    assert layers == ["bronze", "silver", "features", "gold"] * 2 + ["bronze", "bronze"]
    events = table(spark, settings, "bronze.events")
    assert events.filter(F.col("source_file").endswith(last.name)).count() > 0
    sessions = table(spark, settings, "silver.sessions").filter(F.col("device_type") != BOT)
    scores = table(spark, settings, "gold.session_scores")
    assert sessions.join(scores, "session_id", "left_anti").count() == 0  # every session of both files scored
    capsys.readouterr()
    assert main(["sql", "SELECT count(*) AS n FROM silver.sessions WHERE event_count > 0", "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "n" and int(out[1]) > 0
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert "gold.user_segments" in status and "bronze" in status
    # the stream section: one line per job with its counts, then bronze's watermark, input and quality gate
    streams = status.split("streams (latest batch of each job")[1]
    for job in ("bronze", "silver", "gold"):
        assert f"\n  {job} " in streams, job
    assert "watermark" in streams and "read: events-" in streams and "quality gate: passed" in streams
    assert main(["send-times", "--now", "2026-11-03T00:00"]) == 0  # the day simulate() writes, 2026-11-02
    sent = capsys.readouterr().out.split("gold.send_times: ")[1]
    assert int(sent.split(" persons")[0].replace(",", "")) > 0
    # the registry holds the config's weighted model as champion; too little data to train is refused
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "weighted-v1" in listing and "champion" in listing
    assert main(["train"]) == 2
    assert "leaves no earlier day to train on" in capsys.readouterr().err
    assert main(["models", "rollback"]) == 2  # nothing was champion before
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["content-picks"]) == 0
    picks = capsys.readouterr().out
    assert "gold.content_assignments:" in picks and "default-newsletter" in picks
