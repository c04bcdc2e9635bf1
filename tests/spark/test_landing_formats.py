"""Landing-zone formats: every newline-delimited JSON form, plain or gzip, reaches bronze with its file
named in the lineage; any other file is reported, once (real Spark stream, real Delta tables)."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.bronze.landing import LANDING_SUFFIXES, unread_files
from tests.helpers import bronze_totals, table

pytestmark = pytest.mark.spark


def _segment(event_id: str) -> str:
    return json.dumps({
        "type": "track", "event": "Product Viewed", "messageId": event_id, "anonymousId": "a-1",
        "timestamp": "2026-11-02T10:00:00Z", "receivedAt": "2026-11-02T10:00:01Z",
        "properties": {"product_id": "p-1"}, "context": {"page": {"path": "/product/p-1"}},
    })  # fmt: skip


def test_every_ndjson_form_plain_or_gzip_is_ingested_and_other_files_are_reported_once(spark, settings, caplog):
    settings.landing.mkdir(parents=True)
    expected: dict[str, list[str]] = {}
    for n, suffix in enumerate(LANDING_SUFFIXES):
        name = f"events-{n}{suffix}"
        expected[name] = [f"m-{n}-{i}" for i in range(n + 1)]  # a different count per file, to tell them apart
        text = "".join(_segment(event_id) + "\n" for event_id in expected[name]).encode()
        (settings.landing / name).write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    (settings.landing / "events.csv").write_text("event_id,event_type\nm-x,page_view\n")
    lines = sum(len(ids) for ids in expected.values())

    with caplog.at_level(logging.WARNING, logger="spark_jobs.bronze.landing"):
        bronze.run(spark, settings, "availableNow")
        bronze.run(spark, settings, "availableNow")  # a second run reads nothing new and names the csv no more

    stored = table(spark, settings, "bronze.events").select("event_id", "source_file").collect()
    assert sorted(r.event_id for r in stored) == sorted(i for ids in expected.values() for i in ids)
    assert {r.source_file.rsplit("/", 1)[-1] for r in stored} == set(expected)  # the .gz file, not a decompressed name
    totals = bronze_totals(spark, settings)
    assert (totals.i, totals.a, totals.q, totals.d) == (lines, lines, 0, 0)
    offsets: dict[str, str] = {}
    for run in table(spark, settings, "ops.pipeline_runs").filter("job = 'bronze'").collect():
        offsets.update(run.source_offsets)
    assert offsets == {name: f"{len(ids)} records" for name, ids in expected.items()}

    assert unread_files(settings.landing) == [Path("events.csv")]
    warnings = [r.getMessage() for r in caplog.records if "events.csv" in r.getMessage()]
    assert len(warnings) == 1 and "is not read by bronze" in warnings[0]
