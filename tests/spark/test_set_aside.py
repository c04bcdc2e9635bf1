"""No valid input stops silver or gold: a batch that fails on one device's or one person's data is split,
everything else lands, and what cannot be processed is set aside in ops.set_aside with its error class.

The failure is injected into the real transforms (a Spark `raise_error` on one key's rows, the way a cast
or a constraint fails on real data); the streams, the splitting and the tables are the real ones.
"""

from __future__ import annotations

import pytest
from pyspark.errors import AnalysisException
from pyspark.sql import functions as F

from spark_jobs.contracts import ensure_tables
from spark_jobs.gold import job as gold
from spark_jobs.set_aside import error_class, is_data_error, process_or_set_aside
from spark_jobs.silver import job as silver
from tests.helpers import table
from tests.spark.test_sessions import _events, _view

pytestmark = pytest.mark.spark

DEVICES = ("d-1", "d-3")


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
    assert sorted(r.anonymous_id for r in sessions.collect()) == ["d-1"]
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
    assert in_sessions + aside[0].input_rows == table(spark, settings, "bronze.events").count() == 6
    runs = table(spark, settings, "ops.pipeline_runs").filter("job = 'silver'").collect()
    assert sum(r.input_rows for r in runs) == 3  # the parts that landed, each with its own record
    assert all(r.details.get("part") for r in runs)

    # gold: the person's scoring fails; the stream completes and the person is set aside (how a batch of
    # several persons is split is the same code, tested below without the jobs' cost)
    monkeypatch.undo()
    person = sessions.first().person_id
    inputs = gold.segment_inputs
    monkeypatch.setattr(gold, "segment_inputs", lambda *a, **k: _poison(inputs(*a, **k), "person_id", {person}))
    gold.run(spark, settings)
    scored = {r.person_id for r in table(spark, settings, "gold.session_scores").collect()}
    assert not scored
    aside = table(spark, settings, "ops.set_aside").filter("job = 'gold'").collect()
    assert [(r.key_column, r.key_value, r.event_ids, r.error_class) for r in aside] == [
        ("person_id", person, None, "PythonException")
    ]


def _recorder(spark, fail: set[str] | None = None, code_error: bool = False):
    """A batch function that evaluates each row (failing on the keys in `fail`) and notes what it got."""
    calls: list[tuple[str, list[str]]] = []

    def process(part, name):
        frame = part.select("anonymous_id", F.lit(1).alias("one"))
        frame = frame.select("no_such_column") if code_error else _poison(frame, "anonymous_id", fail or set())
        keys = sorted(r.anonymous_id for r in part.select("anonymous_id").distinct().collect())
        frame.collect()
        calls.append((name, keys))

    return process, calls


def test_one_failing_key_of_several_is_set_aside_and_every_other_key_is_processed_once(spark, settings):
    ensure_tables(spark, settings, ("ops.set_aside",))
    keys = [f"d-{i}" for i in range(1, 8)]
    rows = [(k, f"e-{k}-{n}") for k in keys for n in range(2)]
    batch = spark.createDataFrame(rows, "anonymous_id string, event_id string")
    process, calls = _recorder(spark, fail={"d-5"})
    assert process_or_set_aside(spark, settings, "silver", "anonymous_id", batch, 3, "q", process) == 1
    processed = sorted(k for _, got in calls for k in got)
    assert processed == [k for k in keys if k != "d-5"]  # each once: count conservation
    assert all(name for name, _ in calls)  # every part ran as a named part of batch 3
    aside = table(spark, settings, "ops.set_aside").collect()
    assert [(r.batch, r.key_value, r.input_rows, r.event_ids, r.error_class) for r in aside] == [
        ("q/3", "d-5", 2, ["e-d-5-0", "e-d-5-1"], "PythonException")
    ]


def test_what_fails_for_every_key_is_not_data_and_is_raised_with_nothing_set_aside(spark, settings):
    ensure_tables(spark, settings, ("ops.set_aside",))
    batch = spark.createDataFrame([(d,) for d in ("d-1", "d-2", "d-3")], "anonymous_id string")
    process, calls = _recorder(spark, fail={"d-1", "d-2", "d-3"})
    with pytest.raises(RuntimeError, match="every one of the batch's 3 anonymous_ids fails on its own"):
        process_or_set_aside(spark, settings, "silver", "anonymous_id", batch, 0, "q", process)
    assert calls == [] and table(spark, settings, "ops.set_aside").count() == 0


def test_an_error_in_the_code_is_not_data_and_is_raised_without_splitting(spark, settings):
    ensure_tables(spark, settings, ("ops.set_aside",))
    batch = spark.createDataFrame([("d-1",), ("d-2",)], "anonymous_id string")
    process, _ = _recorder(spark, code_error=True)
    attempts = []
    with pytest.raises(AnalysisException, match="no_such_column"):
        process_or_set_aside(
            spark, settings, "silver", "anonymous_id", batch, 0, "q", lambda p, n: attempts.append(n) or process(p, n)
        )
    assert attempts == [""] and table(spark, settings, "ops.set_aside").count() == 0


def test_a_batch_that_fails_only_whole_loses_nothing(spark, settings):
    """Each part goes through on its own: nothing is set aside, every key is processed once."""
    ensure_tables(spark, settings, ("ops.set_aside",))
    batch = spark.createDataFrame([("d-1",), ("d-2",), ("d-3",)], "anonymous_id string")
    process, calls = _recorder(spark)

    def fails_whole(part, name):
        if name == "":
            raise _data_error(spark)
        process(part, name)

    assert process_or_set_aside(spark, settings, "silver", "anonymous_id", batch, 0, "q", fails_whole) == 0
    assert sorted(k for _, keys in calls for k in keys) == ["d-1", "d-2", "d-3"]
    assert table(spark, settings, "ops.set_aside").count() == 0


def _data_error(spark) -> Exception:
    try:
        spark.sql("SELECT CAST('not a number' AS INT)").collect()
    except Exception as exc:  # the real exception Spark raises for a malformed value
        assert is_data_error(exc) and error_class(exc) == "CAST_INVALID_INPUT"
        return exc
    raise AssertionError("the cast did not fail")
