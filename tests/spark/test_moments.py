"""Micro-moments through Spark: detected per session with evidence, tied to silver.sessions, stable ids."""

from __future__ import annotations

from datetime import timedelta

import pytest

from spark_jobs.contracts import ensure_tables
from spark_jobs.silver import identity
from spark_jobs.silver import job as silver
from spark_jobs.silver.identity import Ident
from spark_jobs.silver.moments import load_thresholds
from spark_jobs.silver.sessions import build_moments, sessionize
from tests.helpers import table
from tests.spark.test_sessions import KEY, T0, _events, rules, sessions_of

pytestmark = pytest.mark.spark


def _session_rows():
    scrolls = [("a1", 10 + i, "scroll", {"scroll_depth": str(20 * (i + 1))}, None, None, "/p") for i in range(3)]
    views = [("a1", 60 * i, "product_view", {"product_id": "p-9"}, None, None, "/product/p-9") for i in range(3)]
    searches = [("a2", 0, "search", {"query": "rain jacket"}, "s-77", None, "/search"),
                ("a2", 20, "search", {"query": "rain jacket women"}, "s-77", "u-5", "/search")]  # fmt: skip
    cart = [("a3", 0, "cart_add", {"product_id": "p-1"}, None, None, "/cart")]
    return scrolls + views + searches + cart


def test_moments_are_found_per_session_with_evidence_and_the_session_they_belong_to(spark, settings):
    thresholds = load_thresholds(settings.micro_moments_file)
    events = _events(spark, _session_rows())
    watermark_us = int((T0 + timedelta(hours=1)).timestamp() * 1_000_000)
    keyed = sessionize(events, rules())
    moments = build_moments(keyed, thresholds, watermark_us, key=KEY)
    found = {(r.anonymous_id, r.moment_type): r for r in moments.collect()}
    assert sorted(found) == [("a1", "rapid_scroll_burst"), ("a1", "repeat_product_view"),
                             ("a2", "search_refinement"), ("a3", "cart_abandonment_risk")]  # fmt: skip
    sessions = {r.anonymous_id: r for r in sessions_of(events, 300).collect()}
    assert all(r.session_id == sessions[r.anonymous_id].session_id for r in found.values())
    refinement = found[("a2", "search_refinement")]
    assert sessions["a2"].client_session_id == "s-77" and refinement.person_id == identity.person_id_of(
        Ident("user_id", "u-5"), KEY
    )
    assert refinement.evidence["kind"] == "narrowed" and refinement.evidence["to_query"] == "rain jacket women"
    assert found[("a1", "repeat_product_view")].evidence["views"] == "3"
    assert len(found[("a1", "rapid_scroll_burst")].event_ids) == 3
    again = {r.moment_id for r in build_moments(keyed, thresholds, watermark_us, key=KEY).collect()}
    assert again == {r.moment_id for r in found.values()}  # stable ids
    # without a watermark nothing is known to be quiet yet: no abandonment risk
    early = {r.moment_type for r in build_moments(keyed, thresholds, None, key=KEY).collect()}
    assert "cart_abandonment_risk" not in early


def test_the_silver_stream_writes_moments_and_a_rerun_changes_nothing(spark, settings):
    ensure_tables(spark, settings)
    _events(spark, _session_rows()).write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))
    silver.run(spark, settings)
    stored = table(spark, settings, "silver.micro_moments")
    assert sorted(r.moment_type for r in stored.collect()) == [
        "rapid_scroll_burst", "repeat_product_view", "search_refinement"]  # fmt: skip
    replay = silver.process_silver_batch(spark, settings, table(spark, settings, "bronze.events"), 99, "replay")
    changed = [replay.details[f"moments_{kind}"] for kind in ("inserted", "updated", "deleted")]
    assert changed == [0, 0, 0]
    assert table(spark, settings, "silver.micro_moments").count() == 3
