"""Bronze in depth: dedup keys and the watermark, schema versions added without a restart, replay of
quarantined rows, and the data quality gate (real Spark streams, real Delta tables, real GX)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace

import pytest
from pyspark.sql.types import StructType

from spark_jobs.bronze import job as bronze
from spark_jobs.bronze.replay import Selection, replay_quarantine
from spark_jobs.contracts import TABLES_DIR, SchemaContractError, ensure_tables, table_contract
from spark_jobs.quality import QualityGateHalted
from tests.helpers import bronze_totals, table

pytestmark = pytest.mark.spark


def _web(event_id: str, ts: str = "2026-11-02T10:00:00Z", sid: str | None = "s-1", **extra) -> dict:
    return {"sdk": "web", "kind": "pageview", "eid": event_id, "ts": ts, "anon": "a-1", "sid": sid,
            "url": "https://shop.example.com/", **extra}  # fmt: skip


def _canonical(event_id: str, version: int, **extra) -> dict:
    return {"event_id": event_id, "event_type": "page_view", "occurred_at": "2026-11-02T10:00:00Z",
            "received_at": "2026-11-02T10:00:01Z", "anonymous_id": "a-9", "schema_version": version,
            "source": {"kind": "web_sdk", "sdk": "edge", "version": "1"}, **extra}  # fmt: skip


def _land(settings, name: str, records: list[dict]) -> None:
    settings.landing.mkdir(parents=True, exist_ok=True)
    (settings.landing / name).write_text("".join(json.dumps(r) + "\n" for r in records))


def _bronze_ids(spark, settings) -> list[tuple]:
    return sorted((r.event_id, r.session_id) for r in table(spark, settings, "bronze.events").collect())


def _conserved(spark, settings) -> None:
    runs = bronze_totals(spark, settings)
    assert runs.i == runs.a + runs.q + runs.d


def test_dedup_is_by_session_and_event_id_and_late_events_are_quarantined(spark, settings):
    settings = replace(settings, dedup_window="1 hour")
    _land(settings, "a.ndjson", [
        _web("e-1"), _web("e-1"),  # a retry: one event
        _web("e-1", sid="s-2"),  # the same client id in another session: another event
        _web("e-2", sid=None), _web("e-2", sid=None),  # no session id: event_id alone decides
        _web("e-3", ts="2026-11-02T12:00:00Z"),  # the newest event time so far
    ])  # fmt: skip
    bronze.run(spark, settings)
    assert _bronze_ids(spark, settings) == [("e-1", "s-1"), ("e-1", "s-2"), ("e-2", None), ("e-3", "s-1")]

    # watermark = 12:00 - 1 hour: 10:59 is too late, 11:00 is not; a late copy of a stored event stays out too
    _land(settings, "b.ndjson", [_web("e-4", ts="2026-11-02T10:59:00Z"), _web("e-5", ts="2026-11-02T11:00:00Z"),
                                 _web("e-1", ts="2026-11-02T10:00:00Z")])  # fmt: skip
    bronze.run(spark, settings)
    assert ("e-5", "s-1") in _bronze_ids(spark, settings) and len(_bronze_ids(spark, settings)) == 5
    late = table(spark, settings, "bronze.quarantine").filter("reason = 'too_late_for_watermark'")
    assert sorted(r.event_id for r in late.collect()) == ["e-1", "e-4"]
    assert "before the bronze watermark 2026-11-02T11:00:00" in late.first().detail
    last = table(spark, settings, "ops.pipeline_runs").orderBy("batch_id").collect()[-1]
    assert (last.late_rows, str(last.watermark), str(last.max_event_time)) == (
        2, "2026-11-02 11:00:00", "2026-11-02 12:00:00")  # fmt: skip
    assert last.source_offsets == {"b.ndjson": "3 records"}
    _conserved(spark, settings)


def test_changing_the_dedup_keys_on_an_existing_checkpoint_fails_fast(spark, settings):
    _land(settings, "a.ndjson", [_web("e-1")])
    bronze.run(spark, settings)
    changed = replace(settings, dedup_keys="event_id")
    with pytest.raises(bronze.DedupKeysChanged) as caught:
        bronze.run(spark, changed)
    message = str(caught.value)
    assert "deduplicates by (session_id, event_id)" in message
    assert "INTENTLAKE_DEDUP_KEYS=session_id,event_id" in message and "move the checkpoint aside" in message
    bronze.run(spark, settings)  # the original keys still resume


def _wait_until(condition, what: str, query, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if query.exception():
            raise query.exception()
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} did not happen in {timeout_s}s")


def test_a_new_schema_version_is_accepted_without_a_restart_and_quarantined_rows_replay_once(spark, settings, tmp_path):
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shutil.copy(TABLES_DIR / "events" / "canonical_event.v1.schema.json", schemas)
    settings = replace(settings, schema_dir=schemas)
    campaign = {"source": "newsletter", "medium": "email", "name": "bf", "term": None, "content": None}
    _land(settings, "1.ndjson", [_canonical("c-1", 1), _canonical("c-2", 2, campaign=campaign)])
    query = bronze.run(spark, settings, trigger="1 second", wait=False)
    try:
        quarantine = lambda: table(spark, settings, "bronze.quarantine")  # noqa: E731
        _wait_until(lambda: quarantine().count() == 1, "v2 quarantined while only v1 is registered", query)
        assert "schema_version: not a registered canonical schema version" in quarantine().first().detail
        shutil.copy(TABLES_DIR / "events" / "canonical_event.v2.schema.json", schemas)  # the stream keeps running
        _land(settings, "2.ndjson", [_canonical("c-3", 2, campaign=campaign), _canonical("c-4", 1)])
        _wait_until(lambda: table(spark, settings, "bronze.events").count() == 3, "v2 accepted", query)
    finally:
        query.stop()
    stored = {r.event_id: r for r in table(spark, settings, "bronze.events").collect()}
    assert (stored["c-3"].schema_version, stored["c-3"].campaign.name) == (2, "bf")
    assert (stored["c-4"].schema_version, stored["c-4"].campaign) == (1, None)

    # the quarantined v2 event, replayed after the fix; c-2 meanwhile also arrived again, on time
    _land(settings, "3.ndjson", [_canonical("c-2", 2, campaign=campaign)])
    bronze.run(spark, settings)
    result = replay_quarantine(spark, settings, Selection(reasons=("schema_violation",)))
    assert (result.selected, result.accepted, result.duplicates) == (1, 0, 1)  # not stored twice
    assert table(spark, settings, "bronze.events").filter("event_id = 'c-2'").count() == 1
    assert table(spark, settings, "bronze.quarantine").first().replay_outcome == "duplicate"
    # replayed rows are not selected again
    assert replay_quarantine(spark, settings, Selection()).selected == 0


def test_replay_accepts_fixed_rows_and_keeps_still_broken_ones_replayable(spark, settings):
    _land(settings, "a.ndjson", [_web("e-1", ts="2026-11-02T10:00:00Z"), _web("f-1", ts="2026-11-02T13:30:00Z")])
    tight = replace(settings, max_clock_skew="1 hour")
    (settings.landing / "b.ndjson").write_text(
        json.dumps({**_web("f-2", ts="2026-11-02T13:00:00Z"), "recv_ts": "2026-11-02T10:00:00Z"}) + "\n" + "{oops\n"
    )
    bronze.run(spark, tight)
    reasons = sorted(r.reason for r in table(spark, settings, "bronze.quarantine").collect())
    assert reasons == ["future_timestamp", "malformed_json"]
    dry = replay_quarantine(spark, replace(settings, max_clock_skew="6 hours"), Selection(), dry_run=True)
    assert (dry.accepted, dry.rejected) == (1, {"malformed_json": 1})
    assert table(spark, settings, "bronze.events").count() == 2  # a dry run writes nothing

    fixed = replay_quarantine(spark, replace(settings, max_clock_skew="6 hours"), Selection())  # the limit was raised
    assert (fixed.selected, fixed.accepted, fixed.rejected) == (2, 1, {"malformed_json": 1})
    stored = table(spark, settings, "bronze.events").filter("event_id = 'f-2'").first()
    assert stored.ingest_batch == f"replay/{fixed.replay_id}"
    outcomes = {r.reason: r.replay_outcome for r in table(spark, settings, "bronze.quarantine").collect()}
    assert outcomes == {"future_timestamp": "accepted", "malformed_json": "rejected: malformed_json"}
    again = replay_quarantine(spark, settings, Selection())
    assert (again.selected, again.accepted) == (1, 0)  # only the still-broken row is selectable
    run = table(spark, settings, "ops.pipeline_runs").filter(f"query_id = '{fixed.replay_id}'").first()
    assert (run.job, run.input_rows, run.accepted_rows, run.quarantined_rows) == ("replay-quarantine", 2, 1, 1)


def test_quality_gate_quarantines_failing_rows_and_reports_keys_only(spark, settings):
    _land(settings, "a.ndjson", [
        _web("ok-1", data={"scroll_depth": 40}, kind="scroll"),
        _web("bad-1", data={"scroll_depth": 140}, kind="scroll"),
        _web("bad-2", lang="not a locale!"),
    ])  # fmt: skip
    bronze.run(spark, settings)
    assert [e for e, _ in _bronze_ids(spark, settings)] == ["ok-1"]
    rejected = {r.event_id: r for r in table(spark, settings, "bronze.quarantine").collect()}
    assert {e: r.reason for e, r in rejected.items()} == {
        "bad-1": "quality_check_failed",
        "bad-2": "quality_check_failed",
    }
    assert rejected["bad-1"].detail == "failed expect_column_values_to_be_between(scroll_depth)"
    assert json.loads(rejected["bad-1"].raw)["properties"]["scroll_depth"] == "140"  # canonical JSON, replayable
    run = table(spark, settings, "ops.pipeline_runs").first()
    assert run.quality_status == "failed"
    assert run.quality_failures == {
        "expect_column_values_to_be_between(scroll_depth)": ["bad-1"],
        "expect_column_values_to_match_regex(locale)": ["bad-2"],
    }
    assert "not a locale" not in json.dumps(run.asDict(recursive=True), default=str)  # keys, never values
    assert (run.input_rows, run.accepted_rows, run.quarantined_rows) == (3, 1, 2)

    # after the suite is "fixed" (here: the row), replay re-ingests from the canonical JSON kept as raw
    replayed = replay_quarantine(spark, settings, Selection(event_ids=("bad-1",)))
    assert (replayed.accepted, replayed.rejected) == (0, {"quality_check_failed": 1})  # still fails: stays out


def test_quality_gate_halt_policy_stops_the_stream_before_writing(spark, settings):
    settings = replace(settings, quality_policy="halt")
    _land(settings, "a.ndjson", [_web("ok-1"), _web("bad-1", data={"scroll_depth": -5}, kind="scroll")])
    with pytest.raises(Exception, match="failed the data quality gate") as caught:
        bronze.run(spark, settings)
    assert isinstance(caught.value, QualityGateHalted) or "QualityGateHalted" in str(caught.value)
    assert table(spark, settings, "bronze.events").count() == 0
    run = table(spark, settings, "ops.pipeline_runs").first()
    assert (run.quality_status, run.quality_failures) == (
        "halted", {"expect_column_values_to_be_between(scroll_depth)": ["bad-1"]})  # fmt: skip


def test_an_existing_table_gains_the_columns_its_contract_added_and_a_type_conflict_is_named(spark, settings):
    # a bronze.events written before canonical v2: everything but campaign
    old = table_contract("bronze.events").schema()
    old_columns = [f for f in old.fields if f.name != "campaign"]
    path = str(settings.table_path("bronze.events"))
    spark.createDataFrame([], StructType(old_columns)).write.format("delta").save(path)
    ensure_tables(spark, settings, ("bronze.events",))
    assert table(spark, settings, "bronze.events").schema["campaign"].dataType == old["campaign"].dataType

    clash = str(settings.table_path("bronze.quarantine"))
    spark.createDataFrame([(1,)], "raw INT").write.format("delta").save(clash)
    with pytest.raises(SchemaContractError, match=r"column raw is int but quarantine\.sql says string"):
        ensure_tables(spark, settings, ("bronze.quarantine",))
