"""End to end: three simulated days through bronze and silver, `intentlake train` on them, promotion, gold
scoring with the learned champion, content picks, and a rollback."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
from pyspark.sql import functions as F

from spark_jobs.bronze import job as bronze
from spark_jobs.gold import job as gold
from spark_jobs.gold import models
from spark_jobs.gold.content import assign_content
from spark_jobs.gold.train import promote_version, train
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from tests.helpers import rows, table

pytestmark = pytest.mark.e2e
NOW = datetime(2026, 11, 6, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def days(spark, tmp_path_factory):
    from spark_jobs.settings import Settings

    settings = replace(Settings.from_env().with_root(tmp_path_factory.mktemp("e2e-models") / "lakehouse"),
                       shuffle_partitions=2, max_files_per_trigger=1000)  # fmt: skip
    simulate(settings.landing, settings.truth, events=20_000, seed=11, days=3, duplicate_rate=0.01, late_rate=0.02,
             malformed_rate=0.0, lines_per_file=5_000)  # fmt: skip
    bronze.run(spark, settings)
    silver.run(spark, settings)
    return settings


def test_the_learned_model_beats_the_weighted_one_on_held_out_days_and_is_registered(spark, days):
    settings = days
    result = train(spark, settings, now=NOW)
    print(f"held-out AUC: learned {result.challenger.auc:.4f}, weighted {result.champion.auc:.4f} "
          f"({result.challenger.rows} sessions, {result.challenger.positives} converted; trained on "
          f"{result.training_rows})")  # fmt: skip
    assert result.champion_version == "weighted-v1"
    assert result.challenger.auc > result.champion.auc
    assert result.training[1] < result.holdout[0]  # held-out days were never trained on
    trained_on = table(spark, settings, "silver.sessions").filter(
        F.col("is_closed") & (F.col("session_date") <= F.lit(result.training[1]))
    )
    assert trained_on.count() == result.training_rows
    rows = {r.model_version: r for r in models.versions(spark, settings)}
    assert {v: r.status for v, r in rows.items()} == {"weighted-v1": "champion", result.version: "challenger"}
    learned = rows[result.version]
    assert learned.compared_with == "weighted-v1"
    assert learned.metrics["auc"] == pytest.approx(result.challenger.auc)
    assert learned.metrics["baseline_auc"] == pytest.approx(result.champion.auc)
    assert {"precision_at_threshold", "brier", "calibration_error", "rows", "training_rows"} <= learned.metrics.keys()
    assert (learned.holdout_start, learned.holdout_end) == result.holdout


def test_promotion_makes_gold_score_with_the_learned_model_and_rollback_restores_the_weighted(spark, days):
    settings = days
    challenger = next(r for r in models.versions(spark, settings) if r.kind == "learned")
    assert promote_version(spark, settings, challenger.model_version, now=NOW) == "weighted-v1"
    gold.run(spark, settings)
    scores = table(spark, settings, "gold.session_scores")
    assert scores.count() == table(spark, settings, "silver.sessions").count()
    assert {r.model_version for r in scores.select("model_version").distinct().collect()} == {challenger.model_version}
    for row in scores.limit(50).collect():
        assert sum(row.contributions.values()) == pytest.approx(row.intent_score, abs=0.01)
    assert scores.filter("intent_score < 0 OR intent_score > 100").count() == 0

    picks = assign_content(spark, settings)
    persons = table(spark, settings, "gold.user_segments").count()
    assert picks.persons == persons
    assert sum(picks.picks["email"].values()) == persons  # the default rule catches everyone
    assert picks.failures == {}

    assert models.rollback(spark, settings) == ("weighted-v1", challenger.model_version)
    assert models.champion_row(spark, settings).model_version == "weighted-v1"


def test_the_retraining_dag_trains_a_challenger_and_promotes_it_past_the_weighted_champion(spark, days, tmp_path):
    import shutil

    from tests.dag_runner import airflow_env, killed_and_retried, migrate, new_commit, run_dag

    settings = days
    twin = replace(settings.with_root(tmp_path / "twin" / "lakehouse"), shuffle_partitions=settings.shuffle_partitions)
    shutil.copytree(settings.lakehouse, twin.lakehouse)  # for a run killed mid-task, below
    env = airflow_env(tmp_path / "airflow", settings.lakehouse)
    migrate(env)
    result, log = run_dag(env, "retrain_intent_model", "2026-11-07T00:00:00+00:00")
    assert result["state"] == "success", log[-3000:]
    assert result["tasks"] == {"train_challenger": "success", "promote_or_keep": "success"}
    champion = models.champion_row(spark, settings)
    assert champion.kind == "learned" and champion.note.startswith("promoted: AUC")
    assert champion.training_end < champion.holdout_start <= champion.holdout_end <= date(2026, 11, 6)
    assert models.find(spark, settings, "weighted-v1").status == "retired"

    # killed once the challenger is registered, before train_challenger reports it, and retried (the retry
    # finds it registered): the registry ends as the clean run's
    twin_env = airflow_env(tmp_path / "twin" / "airflow", twin.lakehouse)
    migrate(twin_env)
    when = new_commit(twin.table_path("ops.models"))
    killed = killed_and_retried(twin_env, "retrain_intent_model", "2026-11-07T00:00:00+00:00", when)
    assert killed["train_challenger"] == "running"
    assert rows(spark, twin, "ops.models") == rows(spark, settings, "ops.models")
