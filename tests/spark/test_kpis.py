"""Daily KPIs on hand-built silver and gold rows (every figure checked by hand), the day's rewrite, and the
report: one HTML file whose embedded PNGs decode and render, holding the KPIs and no person."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.gold.kpis import load_kpi_config, render_report, run_kpis
from tests.helpers import table

pytestmark = pytest.mark.spark

D = date(2026, 11, 3)
AS_OF = datetime(2026, 11, 4, tzinfo=UTC)


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour)


def _session(sid, person, day, hour, *, converted=False, carts=0, closed=True, local_hour=None):
    start = _at(day, hour)
    return {
        "session_id": sid, "person_id": person, "anonymous_id": f"anon-{person}", "user_id": None,
        "session_start": start, "session_end": start + timedelta(minutes=20), "is_closed": closed,
        "sessionized_by": "idle_timeout", "event_count": 5, "page_depth": 2, "page_views": 2,
        "dwell_seconds": 30.0, "dwell_total_seconds": 60.0, "engaged_seconds": 60.0 * (1 + carts),
        "max_scroll_depth": 50.0, "scroll_velocity": 0.0, "scrolls": 1, "clicks": 1, "click_density": 0.5,
        "product_views": 1, "distinct_products": 1, "repeat_product_views": 0, "cart_adds": carts,
        "wishlist_adds": 0, "searches": 0, "search_refinements": 0, "checkout_started": converted,
        "converted": converted, "traffic_source": "direct", "traffic_medium": "direct", "session_phase": "browsing",
        "local_hour": local_hour, "duration_seconds": 1200.0, "updated_at": start, "session_date": day,
    }  # fmt: skip


def _score(session, score, segment):
    return {
        "session_id": session["session_id"], "person_id": session["person_id"],
        "session_start": session["session_start"], "session_end": session["session_end"],
        "is_closed": session["is_closed"], "intent_score": float(score), "contributions": {"all": float(score)},
        "model_version": "test-v1", "segment": segment, "session_date": session["session_date"],
    }  # fmt: skip


def _moment(session, kind):
    return {
        "moment_id": f"{session['session_id']}-{kind}", "moment_type": kind, "session_id": session["session_id"],
        "person_id": session["person_id"], "anonymous_id": session["anonymous_id"],
        "detected_at": session["session_start"] + timedelta(minutes=5), "event_ids": ["e1"], "evidence": {},
        "moment_date": session["session_date"],
    }  # fmt: skip


PREV = D - timedelta(days=1)
# the baseline day: one triggered session abandoned, one triggered that bought -> 50 %, target 40 %
B1 = _session("b1", "person-SECRET-2", PREV, 9)
B2 = _session("b2", "person-SECRET-3", PREV, 9, converted=True)
B3 = _session("b3", "person-SECRET-4", PREV, 9)
S1 = _session("s1", "person-SECRET-1", D, 10, converted=True, carts=1, local_hour=10)  # TP, triggered, micro
S2 = _session("s2", "person-SECRET-2", D, 10, carts=1, local_hour=10)  # FP, triggered, micro, abandoned
S3 = _session("s3", "person-SECRET-3", D, 12)  # TN, triggered twice, abandoned; zone unknown
S4 = _session("s4", "person-SECRET-4", D, 20, converted=True, local_hour=23)  # FN
S5 = _session("s5", "person-SECRET-5", D, 21, local_hour=23)  # TN
S6 = _session("s6", "person-SECRET-1", D, 22, closed=False, local_hour=11)  # open: in no rate
NEXT = _session("n1", "person-SECRET-5", D + timedelta(days=1), 8)  # after the day: changes nothing

SESSIONS = [B1, B2, B3, S1, S2, S3, S4, S5, S6, NEXT]
SCORES = [
    _score(B1, 20, "Standard"), _score(B2, 60, "High Consideration"), _score(B3, 5, "Standard"),
    _score(S1, 80, "High Intent"), _score(S2, 75, "High Intent"), _score(S3, 10, "High Consideration"),
    _score(S4, 40, "Standard"), _score(S5, 5, "Bounce Risk"), _score(S6, 90, "High Intent"),
    _score(NEXT, 95, "High Intent"),
]  # fmt: skip
MOMENTS = [
    _moment(B1, "search_refinement"), _moment(B2, "repeat_product_view"),
    _moment(S1, "search_refinement"), _moment(S2, "cart_abandonment_risk"), _moment(S3, "search_refinement"),
    _moment(S3, "repeat_product_view"), _moment(S6, "rapid_scroll_burst"),
]  # fmt: skip


def _append(spark, settings, name, rows):
    frame = spark.createDataFrame(rows, table_contract(name).schema())
    frame.write.format("delta").mode("append").save(str(settings.table_path(name)))


@pytest.fixture
def lakehouse(spark, settings):
    ensure_tables(spark, settings)
    _append(spark, settings, "silver.sessions", SESSIONS)
    _append(spark, settings, "gold.session_scores", SCORES)
    _append(spark, settings, "silver.micro_moments", MOMENTS)
    return settings


def _kpis(spark, settings, day=D):
    rows = table(spark, settings, "gold.kpis_daily").where(f"kpi_date = DATE'{day}'").collect()
    return {(r.kpi, r.dimension): r for r in rows}


def test_every_kpi_of_the_day_matches_the_hand_count(spark, lakehouse):
    settings = lakehouse
    done = run_kpis(spark, settings, D, as_of=AS_OF)
    got = _kpis(spark, settings)
    assert {key: (r.numerator, r.denominator) for key, r in got.items()} == {
        # closed triggered sessions s1, s2, s3; s1 bought and s2 added to the cart
        ("micro_conversion_rate", "all"): (2, 3),
        # score >= 70 (config/models.yaml) against the purchase: TP s1, FP s2, FN s4, TN s3 s5
        ("intent_accuracy", "all"): (3, 5),
        ("intent_precision", "all"): (1, 2),
        ("intent_recall", "all"): (1, 2),
        ("trigger_abandonment", "all"): (2, 3),
        ("trigger_abandonment", "search_refinement"): (1, 2),
        ("trigger_abandonment", "cart_abandonment_risk"): (1, 1),
        ("trigger_abandonment", "repeat_product_view"): (1, 1),
        # at the end of the day in event time: person 1's open s6 counts, person 5's next-day session does not
        ("segment_size", "High Intent"): (2, 2),
        ("segment_size", "High Consideration"): (1, 1),
        ("segment_size", "Standard"): (1, 1),
        ("segment_size", "Bounce Risk"): (1, 1),
        # persons 3 and 4 stayed where they were the day before
        ("segment_flow", "(new)>High Intent"): (1, 1),
        ("segment_flow", "Standard>High Intent"): (1, 1),
        ("segment_flow", "(new)>Bounce Risk"): (1, 1),
        ("engagement_by_hour", "10"): (2, 2),
        ("engagement_by_hour", "11"): (1, 1),
        ("engagement_by_hour", "23"): (2, 2),
        ("engagement_by_hour", "unknown"): (1, 1),
    }
    assert got["micro_conversion_rate", "all"].target == 0.15 and got["micro_conversion_rate", "all"].target_met
    assert got["intent_accuracy", "all"].value == 0.6 and got["intent_accuracy", "all"].target_met is False
    # friction: the day before abandoned 1 of its 2 triggered sessions; the target is 20 % below that
    friction = got["trigger_abandonment", "all"]
    assert friction.target == pytest.approx(0.4) and friction.target_met is False
    assert got["engagement_by_hour", "11"].value == 60.0 and got["engagement_by_hour", "10"].value == 120.0
    assert {r.as_of for r in got.values()} == {AS_OF.replace(tzinfo=None)}
    assert {r.config_version for r in got.values()} == {load_kpi_config(settings.kpis_file).version}
    assert done.figures["intent_accuracy"] == 0.6 and done.rows == len(got)


def test_rerunning_a_day_replaces_its_rows_and_leaves_other_days_alone(spark, lakehouse):
    settings = lakehouse
    run_kpis(spark, settings, PREV, as_of=AS_OF - timedelta(days=1))
    first = run_kpis(spark, settings, D, as_of=AS_OF)
    before = sorted(map(tuple, table(spark, settings, "gold.kpis_daily").collect()))
    again = run_kpis(spark, settings, D, as_of=AS_OF)
    assert again.version == first.version + 1  # one commit
    assert sorted(map(tuple, table(spark, settings, "gold.kpis_daily").collect())) == before
    assert _kpis(spark, settings, PREV)["intent_accuracy", "all"].denominator == 3
    assert ("trigger_abandonment", "all") in _kpis(spark, settings, PREV)


def test_the_report_holds_the_kpis_and_its_images_render(spark, lakehouse, tmp_path):
    import matplotlib.image

    settings = lakehouse
    run_kpis(spark, settings, PREV, as_of=AS_OF - timedelta(days=1))
    run_kpis(spark, settings, D, as_of=AS_OF)
    docs = tmp_path / "docs" / "index.html"
    docs.parent.mkdir()
    docs.write_text("<html></html>")
    path = render_report(spark, settings, D, tmp_path / "kpi", data_docs=docs)
    page = path.read_text()
    assert path.name == f"kpi_report_{D}.html"
    wanted = ("Micro-conversion rate", "66.7 %", "Intent signal accuracy", "60.0 %", "&gt; 85%", "not measured",
              "Standard</td><td>High Intent", "../docs/index.html")  # fmt: skip
    for text in wanted:
        assert text in page, text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    for data in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0  # a picture, not a blank
    assert "SECRET" not in page and "anon-" not in page and "s1" not in re.sub(r"base64,[^\"]+", "", page)
    assert 'src="http' not in page  # self-contained: nothing to fetch


def test_a_day_without_kpis_has_no_report(spark, lakehouse, tmp_path):
    with pytest.raises(ValueError, match="no rows for 2026-11-03"):
        render_report(spark, lakehouse, D, tmp_path)
