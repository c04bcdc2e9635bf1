"""Bronze transforms and one micro-batch, on inline lines (real Spark, real Delta in a temp dir)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from spark_jobs.bronze.job import first_of_each_event, parse_lines, process_bronze_batch
from spark_jobs.contracts import ensure_tables

pytestmark = pytest.mark.spark


def _segment(event_id: str, ts: str = "2026-11-02T10:00:00Z", received: str = "2026-11-02T10:00:01Z") -> str:
    return json.dumps({
        "type": "track", "event": "Product Viewed", "messageId": event_id, "anonymousId": "a-1",
        "timestamp": ts, "receivedAt": received, "properties": {"product_id": "p-1"},
        "context": {"userAgent": "Mozilla/5.0 (Windows NT 10.0)", "page": {"path": "/product/p-1"}},
    })  # fmt: skip


def _web(event_id: str, ts_ms: int = 1793620017046) -> str:
    return json.dumps({"sdk": "web", "kind": "click", "eid": event_id, "ts": ts_ms, "anon": "a-2", "x": 1, "y": 2,
                       "button_id": "buy"})  # fmt: skip


def _lines(spark, lines, source_file="landing/f1.ndjson"):
    return spark.createDataFrame([(line, source_file) for line in lines], "value string, source_file string")


def test_parse_lines_gives_one_row_per_line_with_canonical_columns_or_a_reason(spark):
    parsed = parse_lines(_lines(spark, [_segment("m-1"), _web("e-1"), "{oops", '{"foo": 1}']))
    rows = sorted(
        ((r.event_id, r.event_type, r.occurred_at, r.properties, r.is_accepted, r.reason, r.raw)
         for r in parsed.collect()),
        key=lambda r: (r[4], r[0] or "", r[5] or ""),
    )  # fmt: skip
    assert [r[:6] for r in rows] == [
        (None, None, None, None, False, "malformed_json"),
        (None, None, None, None, False, "unknown_source"),
        ("e-1", "click", datetime(2026, 11, 2, 11, 46, 57, 46000), {"x": "1", "y": "2", "button_id": "buy"},
         True, None),
        ("m-1", "product_view", datetime(2026, 11, 2, 10, 0), {"product_id": "p-1", "event_name": "Product Viewed"},
         True, None),
    ]  # fmt: skip
    assert {r[6] for r in rows if not r[4]} == {"{oops", '{"foo": 1}'}  # the raw line is kept for replay


def test_first_of_each_event_keeps_the_earliest_received_copy(spark):
    late_copy = _segment("m-1", received="2026-11-02T10:05:00Z")
    parsed = parse_lines(_lines(spark, [late_copy, _segment("m-1"), _segment("m-2")]))
    firsts = {r.event_id: r.received_at for r in first_of_each_event(parsed.filter("is_accepted")).collect()}
    assert firsts == {"m-1": datetime(2026, 11, 2, 10, 0, 1), "m-2": datetime(2026, 11, 2, 10, 0, 1)}


def test_a_batch_conserves_every_line_and_a_replay_writes_nothing_twice(spark, settings):
    ensure_tables(spark, settings)
    lines = [_segment("m-1"), _segment("m-1"), _segment("m-2"), _web("e-1"), "not json", "[1]"]
    batch = _lines(spark, lines)
    first = process_bronze_batch(spark, settings, batch, batch_id=0, query_id="q")
    assert (first.input_rows, first.accepted_rows, first.quarantined_rows, first.duplicate_rows) == (
        6,
        3,
        2,
        1,
    )
    assert first.input_rows == first.accepted_rows + first.quarantined_rows + first.duplicate_rows
    assert first.quarantine_reasons == {"malformed_json": 1, "not_an_object": 1}

    replay = process_bronze_batch(spark, settings, batch, batch_id=0, query_id="q")  # as after a crash
    assert (replay.accepted_rows, replay.duplicate_rows) == (3, 1)  # classified exactly as the first time
    assert spark.read.format("delta").load(str(settings.table_path("bronze.events"))).count() == 3
    assert spark.read.format("delta").load(str(settings.table_path("bronze.quarantine"))).count() == 2
    assert spark.read.format("delta").load(str(settings.table_path("ops.pipeline_runs"))).count() == 1

    later = process_bronze_batch(spark, settings, _lines(spark, [_segment("m-2"), _segment("m-3")]), 1, "q")
    assert (later.accepted_rows, later.duplicate_rows) == (1, 1)  # m-2 was accepted in batch 0
    events = spark.read.format("delta").load(str(settings.table_path("bronze.events")))
    assert sorted(r.event_id for r in events.collect()) == ["e-1", "m-1", "m-2", "m-3"]
    row = events.filter("event_id = 'm-3'").first()
    assert (row.ingest_batch, str(row.event_date), row.source_file) == (
        "q/1",
        "2026-11-02",
        "landing/f1.ndjson",
    )


def test_a_duplicate_beyond_the_dedup_window_is_kept(spark, settings):
    from dataclasses import replace

    settings = replace(settings, dedup_window="1 hours")
    ensure_tables(spark, settings)
    process_bronze_batch(spark, settings, _lines(spark, [_segment("m-1", ts="2026-11-02T10:00:00Z")]), 0, "q")
    # the same id stamped a day later is outside the horizon: a new event, not a duplicate
    again = _lines(spark, [_segment("m-1", ts="2026-11-03T10:00:00Z", received="2026-11-03T10:00:01Z")])
    assert process_bronze_batch(spark, settings, again, 1, "q").accepted_rows == 1
