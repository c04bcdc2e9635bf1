"""No valid input stops silver or gold: a batch that fails on one device's or one person's data is split,
everything else lands, and what cannot be processed is set aside in ops.set_aside with its error class.

The failure is injected into the real transforms (a Spark `raise_error` on one key's rows, the way a cast
or a constraint fails on real data); the streams, the splitting and the tables are the real ones.
"""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables
from spark_jobs.gold import job as gold
from spark_jobs.silver import job as silver
from tests.helpers import table
from tests.spark.test_sessions import _events, _view

pytestmark = pytest.mark.spark

DEVICES = ("d-1", "d-2", "d-3", "d-4", "d-5")


def _poison(frame, column: str, values: set[str]):
    """Rows of `values` fail when Spark evaluates them, as a malformed value does in a cast or a UDF.
    (Non-deterministic, so that Spark evaluates it where it stands, not pushed down to the scan.)"""

    def check(value: str) -> bool:
        if value in values:
            raise ValueError("cannot process this row")
        return True

    return frame.filter(F.udf(check, "boolean").asNondeterministic()(F.col(column)))


def _land(spark, settings):
    ensure_tables(spark, settings)
    rows = [_view(d, 10 * i + 60 * n, path=f"/p{i}", uid=f"u-{d}") for n, d in enumerate(DEVICES) for i in range(3)]
    _events(spark, rows).write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))


def _fail_silver_for(monkeypatch, devices: set[str]):
    build = silver.build_sessions
    monkeypatch.setattr(silver, "build_sessions", lambda *a, **k: _poison(build(*a, **k), "anonymous_id", devices))


def test_a_device_silver_cannot_process_is_set_aside_and_every_other_lands(spark, settings, monkeypatch):
    _land(spark, settings)
    _fail_silver_for(monkeypatch, {"d-3"})

    silver.run(spark, settings)  # completes: the stream is not stopped by one device's data

    sessions = table(spark, settings, "silver.sessions")
    assert sorted(r.anonymous_id for r in sessions.collect()) == ["d-1", "d-2", "d-4", "d-5"]
    aside = table(spark, settings, "ops.set_aside").collect()
    assert [(r.job, r.key_column, r.key_value, r.input_rows, r.error_class) for r in aside] == [
        ("silver", "anonymous_id", "d-3", 3, "PythonException")
    ]
    bronze_d3 = sorted(
        r.event_id for r in table(spark, settings, "bronze.events").filter("anonymous_id = 'd-3'").collect()
    )
    assert aside[0].event_ids == bronze_d3  # which events, by id; never the values that failed
    # count conservation: every bronze event is in a session or set aside
    in_sessions = sessions.agg(F.sum("event_count")).first()[0]
    assert in_sessions + aside[0].input_rows == table(spark, settings, "bronze.events").count() == 15
    runs = table(spark, settings, "ops.pipeline_runs").filter("job = 'silver'").collect()
    assert sum(r.input_rows for r in runs) == 12  # the parts that landed, each with its own record
    assert all(r.details.get("part") for r in runs)

    # gold: one person's scoring fails; the others are scored, that person is set aside
    monkeypatch.undo()
    person = sessions.filter("anonymous_id = 'd-4'").first().person_id
    inputs = gold.segment_inputs
    monkeypatch.setattr(gold, "segment_inputs", lambda *a, **k: _poison(inputs(*a, **k), "person_id", {person}))
    gold.run(spark, settings)
    scored = {r.person_id for r in table(spark, settings, "gold.session_scores").collect()}
    assert len(scored) == 3 and person not in scored
    aside = table(spark, settings, "ops.set_aside").filter("job = 'gold'").collect()
    assert [(r.key_column, r.key_value, r.event_ids, r.error_class) for r in aside] == [
        ("person_id", person, None, "PythonException")
    ]


def test_what_fails_for_every_device_is_not_data_and_still_stops_silver(spark, settings, monkeypatch):
    _land(spark, settings)
    _fail_silver_for(monkeypatch, set(DEVICES))
    with pytest.raises(Exception, match="not in the data"):
        silver.run(spark, settings)
    assert table(spark, settings, "ops.set_aside").count() == 0
    assert table(spark, settings, "silver.sessions").count() == 0


def test_an_error_in_the_code_is_not_data_and_stops_silver_without_splitting(spark, settings, monkeypatch):
    _land(spark, settings)
    build = silver.build_sessions
    monkeypatch.setattr(silver, "build_sessions", lambda *a, **k: build(*a, **k).select("no_such_column"))
    with pytest.raises(Exception, match="no_such_column"):
        silver.run(spark, settings)
    assert table(spark, settings, "ops.set_aside").count() == 0
    assert table(spark, settings, "ops.pipeline_runs").filter("job = 'silver'").count() == 0
