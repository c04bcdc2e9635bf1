"""The model registry (ops.models), the learned scorer's contributions, point-in-time training examples and
how gold follows the champion: a weight change reaches the scores on the next run, not before."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
import yaml

from spark_jobs.config import InvalidConfigError, LearnedFeature, load_scoring
from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.gold import job as gold
from spark_jobs.gold import models
from spark_jobs.gold.models import BASELINE, LearnedScorer, Term
from spark_jobs.gold.train import examples
from spark_jobs.settings import REPO_ROOT
from tests.helpers import table
from tests.spark.test_gold import T0, _sessions

pytestmark = pytest.mark.spark

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LEARNED = LearnedScorer(
    "learned-test",
    -3.0,
    (
        Term(LearnedFeature("cart_adds", "log1p"), 2.5, 0.2),
        Term(LearnedFeature("dwell_seconds", "value"), 0.02, 20.0),
        Term(LearnedFeature("device_type", "equals", "mobile"), -0.4, 0.5),
    ),
)


def _config_dir(tmp_path, scoring_changes: dict | None = None):
    """A copy of config/ with config/scoring.yaml changed (model_version, weights)."""
    target = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", target)
    if scoring_changes:
        doc = yaml.safe_load((target / "scoring.yaml").read_text())
        for key, value in scoring_changes.items():
            if key == "model_version":
                doc["model_version"] = value
            else:
                doc["signals"][key]["weight"] = value
        (target / "scoring.yaml").write_text(yaml.safe_dump(doc))
    return target


def test_learned_contributions_and_the_baseline_add_up_to_the_score(spark):
    sessions = _sessions(spark, [
        ("buyer", "p1", 0, 45.0, 2, "desktop", 4, 12),
        ("glance", "p2", 0, 2.0, 0, "mobile", 1, 2),
        ("average", "p3", 0, 20.0, 0, None, 1, 3),
    ])  # fmt: skip
    rows = {r.session_id: r for r in LEARNED.score(sessions).collect()}
    for row in rows.values():
        assert sum(row.contributions.values()) == pytest.approx(row.intent_score, abs=1e-3)
        assert row.contributions.keys() == {BASELINE, "cart_adds", "dwell_seconds", "device_type=mobile"}
        assert row.model_version == "learned-test"
    assert rows["buyer"].intent_score > rows["average"].intent_score > rows["glance"].intent_score
    assert rows["buyer"].contributions["cart_adds"] > 0 > rows["glance"].contributions["dwell_seconds"]
    # by hand: logit = -3 + 2.5 ln 3 + 0.02 * 45 = 0.6465; 100 * sigmoid = 65.62
    assert rows["buyer"].intent_score == pytest.approx(65.62, abs=0.01)


def test_a_registered_version_scores_exactly_as_it_did_when_registered(spark, settings):
    ensure_tables(spark, settings, ("ops.models",))
    models.register(spark, settings, models.Registration(LEARNED, models.CHALLENGER, {"auc": 0.9}), NOW)
    again = models.scorer_from_row(models.find(spark, settings, "learned-test"))
    assert again == LEARNED
    weighted = models.WeightedScorer(load_scoring(settings.scoring_file))
    models.register(spark, settings, models.Registration(weighted, models.CHAMPION, {}), NOW)
    restored = models.scorer_from_row(models.champion_row(spark, settings))
    sessions = _sessions(spark, [("s", "p", 0, 33.0, 1, "mobile", 3, 8)])
    assert restored.score(sessions).first().intent_score == weighted.score(sessions).first().intent_score


def test_config_weights_register_promote_refuse_and_roll_back(spark, settings, tmp_path):
    ensure_tables(spark, settings, ("ops.models",))
    v1 = load_scoring(settings.scoring_file)
    assert models.resolve_champion(spark, settings, v1, NOW).version == v1.model_version  # first model: champion

    # the same version with other weights is refused, and nothing is written
    changed = load_scoring(_config_dir(tmp_path / "a", {"dwell": 0.2, "mobile": 0.1}) / "scoring.yaml")
    before = table(spark, settings, "ops.models").count()
    with pytest.raises(InvalidConfigError, match=r"registered in ops\.models with other weights"):
        models.resolve_champion(spark, settings, changed, NOW)
    assert table(spark, settings, "ops.models").count() == before

    # a new weighted version replaces a weighted champion at once (editing weights deploys them)
    v2 = replace(changed, model_version="weighted-v2")
    assert models.resolve_champion(spark, settings, v2, NOW + timedelta(hours=1)).version == "weighted-v2"
    status = {r.model_version: r.status for r in models.versions(spark, settings)}
    assert status == {"weighted-v1": "retired", "weighted-v2": "champion"}

    # a challenger that does not beat the champion by the margin stays a challenger
    models.register(spark, settings, models.Registration(LEARNED, models.CHALLENGER, {}), NOW)
    with pytest.raises(models.PromotionRefused, match=r"AUC 0\.9100 does not beat champion weighted-v2 AUC 0\.9080"):
        models.promote(spark, settings, "learned-test", (0.91, 0.908), margin=0.005, now=NOW + timedelta(hours=2))
    assert models.champion_row(spark, settings).model_version == "weighted-v2"
    # one that does is promoted, the champion retired in the same commit
    models.promote(spark, settings, "learned-test", (0.95, 0.908), margin=0.005, now=NOW + timedelta(hours=3))
    status = {r.model_version: r.status for r in models.versions(spark, settings)}
    assert status == {"weighted-v1": "retired", "weighted-v2": "retired", "learned-test": "champion"}

    # while a learned model is champion, a new weighted version only registers as a challenger
    v3 = replace(v2, model_version="weighted-v3")
    assert models.resolve_champion(spark, settings, v3, NOW + timedelta(hours=4)).version == "learned-test"
    assert models.find(spark, settings, "weighted-v3").status == "challenger"

    # rollback restores the champion retired last; a second rollback swaps back
    assert models.rollback(spark, settings, NOW + timedelta(hours=5)) == ("weighted-v2", "learned-test")
    assert models.champion_row(spark, settings).model_version == "weighted-v2"
    assert models.rollback(spark, settings, NOW + timedelta(hours=6)) == ("learned-test", "weighted-v2")
    # and a rolled-back config version is not re-promoted by the config naming it
    assert models.resolve_champion(spark, settings, v2, NOW + timedelta(hours=7)).version == "learned-test"
    assert table(spark, settings, "ops.models").count() == 4  # versions are never deleted


def test_training_examples_are_point_in_time(spark, settings):
    """A person's features computed after a session began never reach that session's example."""
    ensure_tables(spark, settings, ("silver.sessions", "silver.micro_moments", "silver.user_features"))
    day = T0.date()

    def features(as_of: date, sessions_28d: int, conversion_rate: float) -> dict:
        return {"person_id": "p1", "sessions_7d": 1, "sessions_28d": sessions_28d, "product_views_28d": 1,
                "cart_adds_28d": 0, "purchases_28d": 0, "cart_add_rate_28d": 0.0,
                "conversion_rate_28d": conversion_rate, "avg_dwell_seconds_28d": 4.0,
                "days_since_last_session": 1.0, "engagement_by_hour": [0] * 24, "engagement_by_weekday": [0] * 7,
                "first_seen": T0 - timedelta(days=5), "feature_version": "v1", "as_of_date": as_of}  # fmt: skip

    # as of the session's day (sessions before it) and as of the next day (which counts the session itself)
    rows = [features(day, 2, 0.0), features(day + timedelta(days=1), 3, 0.33)]
    spark.createDataFrame(rows, table_contract("silver.user_features").schema()).write.format("delta").mode(
        "append"
    ).save(str(settings.table_path("silver.user_features")))
    sessions = _sessions(spark, [("bought", "p1", 0, 30.0, 1, "desktop", 3, 9), ("open", "p1", 60, 5.0, 0, None, 1, 2)])
    sessions = sessions.withColumn("converted", sessions.session_id == "bought").withColumn(
        "is_closed", sessions.session_id == "bought"
    )
    sessions.write.format("delta").mode("append").save(str(settings.table_path("silver.sessions")))
    got = examples(spark, settings, day, day + timedelta(days=1)).collect()
    assert [(r.session_id, r.sessions_28d, r.conversion_rate_28d, r.label) for r in got] == [("bought", 2, 0.0, 1.0)]


def _write_sessions(spark, settings, rows):
    _sessions(spark, rows).write.format("delta").mode("append").save(str(settings.table_path("silver.sessions")))


def test_a_weight_change_reaches_the_scores_on_the_next_run_only(spark, settings, tmp_path):
    ensure_tables(spark, settings)
    _write_sessions(spark, settings, [
        ("s1", "p1", 0, 30.0, 1, "mobile", 4, 9),
        ("s2", "p2", 0, 50.0, 0, "desktop", 1, 4),
    ])  # fmt: skip
    gold.run(spark, settings)
    before = {
        r.session_id: (r.intent_score, r.model_version) for r in table(spark, settings, "gold.session_scores").collect()
    }
    assert {v for _, v in before.values()} == {"weighted-v1"}

    # new weights (dwell counts more, cart adds less) under a new version: nothing changes until gold runs
    edited = replace(
        settings, config_dir=_config_dir(tmp_path, {"dwell": 0.4, "cart_add": 0.1, "model_version": "weighted-v2"})
    )
    assert {
        r.session_id: (r.intent_score, r.model_version) for r in table(spark, settings, "gold.session_scores").collect()
    } == before
    gold.run(spark, edited)  # no new silver changes: the rescore of stale persons does it
    after = {
        r.session_id: (r.intent_score, r.model_version) for r in table(spark, edited, "gold.session_scores").collect()
    }
    assert {v for _, v in after.values()} == {"weighted-v2"}
    assert after["s1"][0] == pytest.approx(before["s1"][0] - 15 + 7.5)  # cart 25 -> 10 points, dwell 12.5 -> 20
    assert after["s2"][0] == pytest.approx(before["s2"][0] + 0.15 * 100 * 50 / 60)
    segments = {r.person_id: r.model_version for r in table(spark, edited, "gold.user_segments").collect()}
    assert segments == {"p1": "weighted-v2", "p2": "weighted-v2"}
    runs = table(spark, edited, "ops.pipeline_runs").filter("query_id = 'rescore:weighted-v2'").collect()
    assert len(runs) == 1 and runs[0].input_rows == 2


BAD_CONFIGS = [
    ("segments.yaml", lambda d: d["segments"][0].update(when="intent_scor > 50"), "unknown feature"),
    ("segments.yaml", lambda d: d["segments"][1].update(when="intent_score + 1"), "not a boolean"),
    ("scoring.yaml", lambda d: d["signals"]["dwell"].update(feature="dwel_seconds"), "unknown feature"),
    ("models.yaml", lambda d: d["learned"]["features"].append({"column": "converted", "transform": "value"}),
     "set by the purchase itself"),
    ("models.yaml", lambda d: d["learned"]["features"].append({"column": "device_type", "transform": "log1p"}),
     "needs a numeric column"),
    ("content_rules.yaml", lambda d: d["rules"][0].update(trigger='segment > 3'), "fails on typed sample values"),
    ("content_rules.yaml", lambda d: d["rules"][0].update(trigger='segmnt == "x"'), "unknown variable"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "edit", "problem"), BAD_CONFIGS)
def test_a_bad_config_stops_gold_before_anything_is_written(spark, settings, tmp_path, name, edit, problem):
    ensure_tables(spark, settings, ("silver.sessions", "gold.session_scores", "gold.user_segments", "ops.models"))
    _write_sessions(spark, settings, [("s1", "p1", 0, 30.0, 1, "mobile", 4, 9)])
    config = _config_dir(tmp_path)
    doc = yaml.safe_load((config / name).read_text())
    edit(doc)
    (config / name).write_text(yaml.safe_dump(doc, sort_keys=False))
    bad = replace(settings, config_dir=config)
    versions = {t: _version(spark, settings, t) for t in ("gold.session_scores", "gold.user_segments", "ops.models")}
    with pytest.raises(InvalidConfigError, match=problem) as caught:
        gold.run(spark, bad)
    assert name in str(caught.value)
    assert {t: _version(spark, settings, t) for t in versions} == versions
    assert not settings.checkpoint("gold").exists() or not any(settings.checkpoint("gold").rglob("offsets/*"))


def _version(spark, settings, name: str) -> int:
    from delta.tables import DeltaTable

    return DeltaTable.forPath(spark, str(settings.table_path(name))).history(1).first().version


def test_models_listing_holds_no_parameters(spark, settings):
    ensure_tables(spark, settings, ("ops.models",))
    models.register(spark, settings, models.Registration(LEARNED, models.CHAMPION, {"auc": 0.91}), NOW)
    listing = models.as_listing(models.versions(spark, settings))
    assert listing[0]["model_version"] == "learned-test" and listing[0]["auc"] == 0.91
    assert "coefficient" not in json.dumps(listing)
