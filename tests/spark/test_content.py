"""Content picks: config/content_rules.yaml (CEL triggers) evaluated per person into gold.content_assignments."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import yaml
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.gold.content import assign_content, load_content_rules
from spark_jobs.settings import REPO_ROOT
from tests.helpers import table
from tests.spark.test_gold import T0, _sessions

pytestmark = pytest.mark.spark

SEGMENTS = {"p1": ("High Intent", 85.0), "p2": ("High Intent", 85.0), "p3": ("High Consideration", 40.0),
            "p4": ("Standard", 20.0), "p5": ("Standard", 20.0)}  # fmt: skip


def _append(spark, settings, name, rows):
    spark.createDataFrame(rows, table_contract(name).schema()).write.format("delta").mode("append").save(
        str(settings.table_path(name))
    )


@pytest.fixture
def lakehouse(spark, settings):
    ensure_tables(spark, settings)
    sessions = _sessions(spark, [
        (f"s{n}", f"p{n}", 0, 30.0, 1 if n == 1 else 0, "mobile" if n in (4, 5) else "desktop", 3, 8)
        for n in range(1, 6)
    ])  # fmt: skip
    sessions = sessions.withColumn("local_hour", F.when(F.col("person_id") == "p4", 19))  # p5: zone unknown
    sessions.write.format("delta").mode("append").save(str(settings.table_path("silver.sessions")))
    _append(spark, settings, "gold.user_segments", [
        {"person_id": p, "segment": seg, "intent_score": score, "session_id": "s" + p[1:], "last_seen_at": T0,
         "sessions": 1, "model_version": "weighted-v1"} for p, (seg, score) in SEGMENTS.items()
    ])  # fmt: skip
    _append(spark, settings, "silver.micro_moments", [
        {"moment_id": "m1", "moment_type": "cart_abandonment_risk", "session_id": "s1", "person_id": "p1",
         "anonymous_id": "a", "detected_at": T0, "event_ids": ["e1"], "evidence": {}, "moment_date": T0.date()},
    ])  # fmt: skip
    _append(spark, settings, "gold.send_times", [
        {"person_id": "p2", "best_local_hour": 9, "timezone": "Europe/Paris", "source": "person", "confidence": 0.5,
         "sessions": 4, "segment": "High Intent", "window_end": T0},
    ])  # fmt: skip
    return settings


def _picks(spark, settings):
    rows = table(spark, settings, "gold.content_assignments").collect()
    return {(r.person_id, r.channel): r for r in rows}


def test_the_highest_priority_matching_rule_wins_per_channel(spark, lakehouse):
    settings = lakehouse
    result = assign_content(spark, settings)
    picks = _picks(spark, settings)
    assert {k: r.rule for k, r in picks.items()} == {
        ("p1", "email"): "cart-rescue", ("p1", "crm"): "cart-rescue",  # abandonment beats High Intent
        ("p2", "email"): "high-intent-offer", ("p2", "crm"): "high-intent-offer",
        ("p3", "email"): "consideration-compare", ("p3", "crm"): "default-newsletter",  # email-only rule
        ("p4", "email"): "mobile-evening-digest", ("p4", "crm"): "default-newsletter",
        ("p5", "email"): "default-newsletter", ("p5", "crm"): "default-newsletter",  # null hour: guarded, no match
    }  # fmt: skip
    offer = picks[("p2", "email")]
    assert (offer.tone, offer.format, offer.best_local_hour, offer.segment) == ("urgent", "single product hero", 9,
                                                                               "High Intent")  # fmt: skip
    assert offer.rules_version == load_content_rules(settings.content_rules_file).version
    assert result.persons == 5 and result.failures == {} and result.unmatched == {}
    assert (result.merge.inserted, result.merge.updated, result.merge.deleted) == (10, 0, 0)

    # the same inputs again change nothing; a person who leaves gold.user_segments loses their picks
    again = assign_content(spark, settings)
    assert (again.merge.inserted, again.merge.updated, again.merge.deleted) == (0, 0, 0)
    from delta.tables import DeltaTable

    DeltaTable.forPath(spark, str(settings.table_path("gold.user_segments"))).delete("person_id = 'p2'")
    assign_content(spark, settings)
    assert {p for p, _ in _picks(spark, settings)} == {"p1", "p3", "p4", "p5"}


def test_a_trigger_that_cannot_be_evaluated_for_a_person_does_not_match_and_is_counted(spark, lakehouse, tmp_path):
    config = tmp_path / "config"
    shutil.copytree(REPO_ROOT / "config", config)
    doc = yaml.safe_load((config / "content_rules.yaml").read_text())
    doc["rules"] = [
        {"name": "evening", "priority": 5, "trigger": "local_hour >= 18",  # unguarded: null for p1-p3, p5
         "adaptations": {"tone": "calm", "format": "digest", "cta": "Read"}},
    ]  # fmt: skip
    (config / "content_rules.yaml").write_text(yaml.safe_dump(doc))
    settings = replace(lakehouse, config_dir=config)
    result = assign_content(spark, settings)
    assert result.failures == {"evening": 4}
    assert result.unmatched == {"email": 4, "crm": 4}
    assert {k: r.rule for k, r in _picks(spark, settings).items()} == {
        ("p4", "email"): "evening",
        ("p4", "crm"): "evening",
    }
