"""silver.profiles from bronze: the latest login, email and phone per person, consent by the latest event
that stated it (a withdrawal wins when it is later), and a re-run rewriting only what changed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables
from spark_jobs.silver.profiles import update_profiles
from tests.helpers import table
from tests.spark.test_sessions import T0, _events

pytestmark = pytest.mark.spark


def _land(spark, settings, rows, consents, prefix):
    events = _events(spark, rows, prefix=prefix)
    scopes = F.create_map(*[F.lit(x) for pair in consents.items() for x in (pair[0], F.array(*map(F.lit, pair[1])))])
    given = F.element_at(scopes, F.col("event_id")) if consents else F.lit(None)
    events = events.withColumn("consent", F.coalesce(given, F.array().cast("array<string>")))
    events.write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))


def test_profiles_take_the_latest_traits_and_the_latest_consent_statement(spark, settings):
    ensure_tables(spark, settings)
    _land(spark, settings, [
        ("a-1", 0, "identify", {"trait.email": " P1@Example.com ", "trait.phone": "+1 555 0100"}, None, "u-1", None),
        ("a-1", 10, "consent", {}, None, "u-1", None),
        ("a-1", 100, "page_view", {"email": "person1-new@example.com"}, None, "u-1", "/"),
        ("a-1", 200, "consent", {}, None, "u-1", None),  # no scopes: everything withdrawn
        ("a-2", 50, "page_view", {}, None, None, "/"),
        ("a-3", 60, "page_view", {}, None, None, "/"),  # nothing to know a person by: no profile
    ], {"e001": ["marketing", "analytics"], "e004": ["personalization"]}, "e")  # fmt: skip
    first = update_profiles(spark, settings)
    rows = {r.user_id or "anon": r for r in table(spark, settings, "silver.profiles").collect()}
    assert sorted(rows) == ["anon", "u-1"] and first.persons == 2 and first.with_email == 1
    known = rows["u-1"]
    assert (known.email, known.phone) == ("person1-new@example.com", "+1 555 0100")
    assert not (known.consent_analytics or known.consent_marketing or known.consent_personalization)
    assert known.consent_updated_at == (T0 + timedelta(seconds=200)).replace(tzinfo=None)
    assert known.consent_source == "web_sdk"
    anonymous = rows["anon"]
    assert anonymous.consent_personalization and not anonymous.consent_marketing and anonymous.email is None

    again = update_profiles(spark, settings)  # nothing new: nothing rewritten
    assert (again.merge.inserted, again.merge.updated, again.merge.deleted) == (0, 0, 0)

    _land(spark, settings, [("a-1", 300, "consent", {}, None, "u-1", None)], {"g000": ["marketing"]}, "g")
    later = update_profiles(spark, settings)
    assert (later.merge.inserted, later.merge.updated, later.merge.deleted) == (0, 1, 0)
    regranted = table(spark, settings, "silver.profiles").filter("user_id = 'u-1'").first()
    assert regranted.consent_marketing and not regranted.consent_analytics and later.consenting["marketing"] == 1
