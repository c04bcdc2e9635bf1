"""Poison input through the real bronze stream: it keeps running and quarantines each line with its reason."""

from __future__ import annotations

import json

import pytest

from spark_jobs.bronze import job as bronze
from tests.helpers import bronze_totals

pytestmark = pytest.mark.spark


def _event(event_id: str, **changes) -> dict:
    event = {
        "type": "track", "event": "Product Viewed", "messageId": event_id, "anonymousId": "a-1",
        "timestamp": "2026-11-02T10:00:00Z", "receivedAt": "2026-11-02T10:00:01Z", "properties": {"product_id": "p"},
    }  # fmt: skip
    event.update(changes)
    return event


def test_poison_input_lands_in_quarantine_with_the_right_reason_and_counts_conserve(spark, settings):
    settings.landing.mkdir(parents=True)
    poison = {
        "truncated.ndjson": (json.dumps(_event("t-1"))[:40] + "\n").encode(),
        "huge.ndjson": (json.dumps(_event("big-1", properties={"blob": "x" * 10_000_000})) + "\n").encode(),
        "latin1.ndjson": json.dumps(_event("enc-1", anonymousId="a-\u00e9"), ensure_ascii=False).encode("latin-1")
        + b"\n",
        "null-ids.ndjson": (json.dumps(_event(None, anonymousId=None)) + "\n").encode(),
        "wrong-types.ndjson": (json.dumps(_event("wt-1", anonymousId=12345)) + "\n").encode(),
        "deep.ndjson": (json.dumps(_event("deep-1", properties={"p": json.loads("[" * 200 + "]" * 200)})) + "\n")
        .encode(),
        "wrong-kind.ndjson": b'{"eid": "wk-1", "kind": ["click"], "ts": 1793620017046, "anon": "a-3"}\n',
        "empty.ndjson": b"",
        "good.ndjson": "".join(json.dumps(_event(f"ok-{i}")) + "\n" for i in range(3)).encode(),
    }  # fmt: skip
    for name, content in poison.items():
        (settings.landing / name).write_bytes(content)

    bronze.run(spark, settings)  # completes: no poison stops the stream

    quarantine = spark.read.format("delta").load(str(settings.table_path("bronze.quarantine")))
    by_file = {r.source_file.rsplit("/", 1)[-1]: (r.reason, r.detail) for r in quarantine.collect()}
    assert {f: reason for f, (reason, _) in by_file.items()} == {
        "truncated.ndjson": "malformed_json",
        "huge.ndjson": "oversize_record",
        "latin1.ndjson": "invalid_encoding",
        "null-ids.ndjson": "schema_violation",
        "wrong-types.ndjson": "schema_violation",
        "deep.ndjson": "schema_violation",
        "wrong-kind.ndjson": "schema_violation",
    }
    assert "anonymous_id" in by_file["wrong-types.ndjson"][1]
    assert quarantine.filter("source_file LIKE '%huge.ndjson'").first().raw.endswith('"}}')  # kept whole for replay
    events = spark.read.format("delta").load(str(settings.table_path("bronze.events")))
    assert sorted(r.event_id for r in events.collect()) == ["ok-0", "ok-1", "ok-2"]
    runs = bronze_totals(spark, settings)
    assert runs.i == 10 == runs.a + runs.q + runs.d
