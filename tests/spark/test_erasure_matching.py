"""Erasing user "42" deletes exactly their quarantined payloads and landing lines; user "420" keeps theirs."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime

import pytest

from spark_jobs import erasure
from spark_jobs.contracts import ensure_tables, table_contract
from tests.helpers import table

pytestmark = pytest.mark.spark

T = "2026-11-02T10:42:42Z"


def segment(user_id: str, message_id: str) -> str:
    return json.dumps({"type": "track", "event": "Product Viewed", "messageId": message_id, "anonymousId": "a-1",
                       "userId": user_id, "timestamp": T})  # fmt: skip


THEIRS = [  # quarantined for user "42"
    '{"type":"track","userId":"42","messageId":"m-1","timestamp":"2026-11-0',  # malformed JSON
    segment("42", "m-2").replace('"Product Viewed"', '"Teleported"'),  # schema violation
    json.dumps({"event": "page_view", "collector_tstamp": T, "user_id": "42", "domain_userid": None}),  # Snowplow
]
OTHERS = [  # quarantined for other people, each holding the text 42 somewhere
    '{"type":"track","userId":"420","messageId":"m-3","timestamp":"2026-11-0',
    segment("142", "e-4217").replace('"Product Viewed"', '"Teleported"'),
    json.dumps({"event": "page_view", "collector_tstamp": T, "user_id": "7", "page_urlpath": "/p/42"}),
]


def test_erasing_user_42_deletes_exactly_their_quarantine_rows_and_landing_lines(spark, settings):
    ensure_tables(spark, settings, ("bronze.quarantine",))
    schema = table_contract("bronze.quarantine").schema()
    row = {"reason": "schema_violation", "detail": "d", "quarantined_at": datetime(2026, 11, 2, 11),
           "quarantine_date": date(2026, 11, 2), "ingest_batch": "q/0"}  # fmt: skip
    rows = [tuple({**row, "raw": raw}.get(f.name) for f in schema.fields) for raw in THEIRS + OTHERS]
    rows_path = str(settings.table_path("bronze.quarantine"))
    spark.createDataFrame(rows, schema).write.format("delta").mode("append").save(rows_path)
    landing = settings.landing
    landing.mkdir(parents=True)
    ours, theirs = segment("42", "m-4") + "\n", segment("420", "e-4217") + "\n"
    (landing / "a.ndjson").write_text(theirs + ours + theirs)
    (landing / "b.ndjson.gz").write_bytes(gzip.compress((ours + theirs + ours).encode()))

    ids = erasure.Identifiers(frozenset(), frozenset(), frozenset({"42"}), frozenset())
    deleted, _ = erasure._delete(spark, settings, "bronze.quarantine", erasure.conditions(ids)["bronze.quarantine"])
    assert deleted == len(THEIRS)
    assert sorted(r.raw for r in table(spark, settings, "bronze.quarantine").collect()) == sorted(OTHERS)

    assert erasure.scrub_landing(settings, ids.texts) == 3
    assert (landing / "a.ndjson").read_text() == theirs + theirs
    assert gzip.decompress((landing / "b.ndjson.gz").read_bytes()).decode() == theirs


def test_a_login_silver_has_not_resolved_yet_takes_its_device_and_leaves_a_shared_one(spark, settings):
    """Bronze holds device d1 browsing, then logging in as u1; silver has not run (the identity map is empty).
    Erasing u1 takes d1's events from before the login too; d2, where u2 also logged in, is a shared device
    and keeps its rows, as identity resolution would have it."""
    ensure_tables(spark, settings, ("bronze.events", "silver.identity_map", "silver.identity_merges"))
    schema = table_contract("bronze.events").schema()
    at = datetime(2026, 11, 2, 10)
    rows = [("e1", "d1", None), ("e2", "d1", "u1"), ("e3", "d2", "u1"), ("e4", "d2", "u2"), ("e5", "d3", "u9"),
            ("e6", "d3", None)]  # fmt: skip
    values = [{"event_id": e, "anonymous_id": a, "user_id": u, "event_type": "page_view", "occurred_at": at,
               "received_at": at, "event_date": at.date(), "ingested_at": at, "schema_version": 3,
               "ingest_batch": "t/0"}
              for e, a, u in rows]  # fmt: skip
    frame = spark.createDataFrame([tuple(v.get(f.name) for f in schema.fields) for v in values], schema)
    frame.write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))

    ids = erasure.resolve(spark, settings, "user_id", "u1")
    assert ids.anonymous_ids == {"d1"} and ids.user_ids == {"u1"}
    erasure._delete(spark, settings, "bronze.events", erasure.conditions(ids)["bronze.events"])
    left = {r.event_id for r in table(spark, settings, "bronze.events").collect()}
    assert left == {"e4", "e5", "e6"}  # d1 whole, and u1's event on the shared d2; u2 and d3 untouched


def test_events_of_an_erased_person_read_only_after_the_erasure_stay_erased_and_are_counted(spark, settings):
    """Bronze behind its source (a Kafka topic keeps what the erasure cannot scrub; a file that lands late):
    an erased person's events received before the erasure are dropped when bronze reads them after it, and
    counted; one received after it (the person came back) is kept, as are everyone else's."""
    from datetime import UTC, timedelta

    from spark_jobs.bronze import job as bronze
    from tests.helpers import bronze_totals

    def line(user: str, message_id: str, received: datetime) -> str:
        occurred = (received - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        return json.dumps({"type": "track", "event": "Product Viewed", "messageId": message_id, "userId": user,
                           "anonymousId": f"a-{user}", "timestamp": occurred,
                           "receivedAt": received.isoformat().replace("+00:00", "Z")})  # fmt: skip

    before = datetime.now(UTC) - timedelta(hours=1)
    settings.landing.mkdir(parents=True)
    (settings.landing / "a.ndjson").write_text(line("u1", "m-1", before) + "\n" + line("u2", "m-2", before) + "\n")
    bronze.run(spark, settings)
    erasure.file_request(spark, settings, "user_id", "u1", datetime.now(UTC))
    erasure.process_erasures(spark, settings, datetime.now(UTC))
    lagging = [line("u1", "m-3", before), line("u2", "m-4", before), line("u1", "m-5", datetime.now(UTC))]
    (settings.landing / "b.ndjson").write_text("\n".join(lagging) + "\n")
    bronze.run(spark, settings)

    kept = {(r.user_id, r.event_id) for r in table(spark, settings, "bronze.events").collect()}
    assert kept == {("u2", "m-2"), ("u2", "m-4"), ("u1", "m-5")}
    totals = bronze_totals(spark, settings)
    assert (totals.i, totals.a, totals.e) == (5, 4, 1)  # m-1 was deleted by the erasure, m-3 never written
    assert totals.i == totals.a + totals.q + totals.d + totals.e
