"""The data-quality suites on real Spark rows: every suite's meta.columns resolve against its table's DDL,
and each newer suite passes valid rows and names the one expectation a deliberately bad row breaks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from spark_jobs.contracts import table_contract
from spark_jobs.quality import QualityGate
from spark_jobs.settings import TABLES

pytestmark = pytest.mark.spark

T = datetime(2025, 3, 1, 12, tzinfo=UTC)
P1, P2 = "p-" + "1" * 24, "p-" + "2" * 24

# Per table: valid rows (column -> value; the rest null), one bad row, the expectation it breaks and its key.
CASES = {
    "bronze.quarantine": (
        [
            {"raw": '{"email": "a@example.com"', "reason": "malformed_json", "detail": "line 1: unexpected end",
             "quarantined_at": T, "quarantine_date": T.date(), "ingest_batch": "q1/0", "source_file": "f.ndjson"},
            {"raw": "{}", "reason": "schema_violation", "detail": "event_type: missing", "event_id": "e-2",
             "quarantined_at": T, "quarantine_date": T.date(), "ingest_batch": "q1/0",
             "replayed_at": T + timedelta(hours=1), "replay_outcome": "rejected: schema_violation"},
        ],
        {"raw": "{}", "reason": "schema_violation", "detail": "x", "event_id": "e-3", "quarantined_at": T,
         "quarantine_date": T.date(), "ingest_batch": "q1/1", "replayed_at": T + timedelta(hours=1)},
        "expect_column_values_to_be_in_set(replay_half_recorded)",
        ["q1/1 e-3"],
    ),
    "gold.engagement_rhythm": (
        [
            {"scope": "person", "scope_key": P1, "local_weekday": 1, "local_hour": 9, "sessions": 2,
             "conversions": 1, "share": 0.5, "window_start": T - timedelta(days=28), "window_end": T},
            {"scope": "segment", "scope_key": "High Intent", "local_weekday": 7, "local_hour": 23, "sessions": 4,
             "conversions": 0, "share": 1.0, "window_start": T - timedelta(days=28), "window_end": T},
        ],
        {"scope": "person", "scope_key": P1, "local_weekday": 1, "local_hour": 10, "sessions": 1,
         "conversions": 2, "share": 0.5, "window_start": T - timedelta(days=28), "window_end": T},
        "expect_column_values_to_be_between(conversions_over_sessions)",
        [f"person|{P1}|1|10"],
    ),
    "gold.send_times": (
        [
            {"person_id": P1, "best_local_hour": 9, "timezone": "Europe/Berlin", "source": "person",
             "confidence": 0.8, "sessions": 5, "segment": "Standard", "window_end": T},
            {"person_id": P2, "best_local_hour": 0, "source": "everyone", "confidence": 0.25, "sessions": 0,
             "window_end": T},
        ],
        {"person_id": "p-" + "3" * 24, "best_local_hour": 18, "source": "segment", "confidence": 0.8,
         "sessions": 1, "window_end": T},
        "expect_column_values_to_be_between(fallback_confidence)",
        ["p-" + "3" * 24],
    ),
    "gold.user_segments_history": (
        [
            {"person_id": P1, "segment": "Standard", "valid_from": T, "valid_to": T + timedelta(hours=1),
             "source_version": 1, "closed_version": 3, "intent_score": 20.0, "session_id": "s1",
             "model_version": "w1"},
            {"person_id": P1, "segment": "High Intent", "valid_from": T + timedelta(hours=1), "source_version": 3,
             "intent_score": 80.0, "session_id": "s2", "model_version": "w1"},
            {"person_id": P2, "segment": "Standard", "valid_from": T, "source_version": 1, "intent_score": 10.0,
             "session_id": "s3", "model_version": "w1"},
        ],
        {"person_id": P2, "segment": "Bounce Risk", "valid_from": T + timedelta(hours=2), "source_version": 4,
         "intent_score": 5.0, "session_id": "s4", "model_version": "w1"},
        "expect_column_values_to_be_unique(open_spell_of)",
        [f"{P2}|1", f"{P2}|4"],
    ),
    "gold.content_assignments": (
        [
            {"person_id": P1, "channel": "email", "rule": "price-deals", "priority": 70, "tone": "casual",
             "format": "carousel", "cta": "See deals", "segment": "Price Sensitive", "intent_score": 40.0,
             "session_id": "s1", "best_local_hour": 19, "rules_version": "0123456789ab", "evaluated_at": T},
            {"person_id": P1, "channel": "crm", "rule": "price-deals", "priority": 70, "tone": "casual",
             "format": "carousel", "cta": "See deals", "segment": "Price Sensitive", "intent_score": 40.0,
             "session_id": "s1", "rules_version": "0123456789ab", "evaluated_at": T},
        ],
        {"person_id": P2, "channel": "email", "rule": "default-newsletter", "priority": 0, "tone": "friendly",
         "format": "newsletter", "cta": "", "segment": "Standard", "intent_score": 10.0, "session_id": "s2",
         "rules_version": "0123456789ab", "evaluated_at": T},
        "expect_column_values_to_be_between(adaptation_length)",
        [f"{P2}|email"],
    ),
    "gold.kpis_daily": (
        [
            {"kpi_date": date(2025, 3, 1), "kpi": "micro_conversion_rate", "dimension": "all", "value": 0.25,
             "numerator": 1, "denominator": 4, "target": 0.2, "target_met": True, "as_of": T + timedelta(hours=12),
             "config_version": "abcdef012345"},
            {"kpi_date": date(2025, 3, 1), "kpi": "intent_precision", "dimension": "all", "numerator": 0,
             "denominator": 0, "as_of": T + timedelta(hours=12), "config_version": "abcdef012345"},
            {"kpi_date": date(2025, 3, 1), "kpi": "segment_flow", "dimension": "(new)>Standard", "value": 3.0,
             "numerator": 3, "denominator": 3, "as_of": T + timedelta(hours=12), "config_version": "abcdef012345"},
            {"kpi_date": date(2025, 3, 1), "kpi": "engagement_by_hour", "dimension": "18", "value": 95.5,
             "numerator": 2, "denominator": 2, "as_of": T + timedelta(hours=12), "config_version": "abcdef012345"},
        ],
        {"kpi_date": date(2025, 3, 1), "kpi": "intent_recall", "dimension": "all", "value": 1.5, "numerator": 3,
         "denominator": 3, "as_of": T + timedelta(hours=12), "config_version": "abcdef012345"},
        "expect_column_values_to_be_between(rate_value)",
        ["2025-03-01|intent_recall|all"],
    ),
    "ops.pipeline_runs": (
        [
            {"job": "bronze", "query_id": "q1", "batch_id": 0, "started_at": T, "duration_ms": 900,
             "input_rows": 10, "accepted_rows": 7, "quarantined_rows": 2, "duplicate_rows": 1,
             "quarantine_reasons": {"malformed_json": 2}, "details": {}, "run_date": T.date(),
             "quality_status": "passed"},
            {"job": "bronze", "query_id": "q1", "batch_id": 1, "started_at": T, "duration_ms": 900,
             "input_rows": 5, "accepted_rows": 0, "quarantined_rows": 0, "duplicate_rows": 0,
             "quarantine_reasons": {}, "details": {}, "run_date": T.date(), "quality_status": "halted",
             "quality_failures": {"expect_column_values_to_be_between(scroll_depth)": ["e-1"]}},
            {"job": "bronze", "query_id": "q1", "batch_id": 1, "started_at": T, "duration_ms": 900,
             "input_rows": 5, "accepted_rows": 5, "quarantined_rows": 0, "duplicate_rows": 0,
             "quarantine_reasons": {}, "details": {}, "run_date": T.date(), "quality_status": "passed"},
            {"job": "silver", "query_id": "q2", "batch_id": 0, "started_at": T, "duration_ms": 1200,
             "input_rows": 5, "accepted_rows": 3, "quarantined_rows": 0, "duplicate_rows": 0,
             "quarantine_reasons": {}, "details": {"sessions_updated": "3"}, "run_date": T.date()},
        ],
        {"job": "bronze", "query_id": "q1", "batch_id": 2, "started_at": T, "duration_ms": 900, "input_rows": 10,
         "accepted_rows": 7, "quarantined_rows": 2, "duplicate_rows": 0, "quarantine_reasons": {"bad_timestamp": 2},
         "details": {}, "run_date": T.date()},
        "expect_column_values_to_be_in_set(bronze_unbalanced)",
        ["bronze/q1/2"],
    ),
    "ops.models": (
        [
            {"model_version": "weighted-v1", "kind": "weighted", "status": "champion", "features": ["cart_adds"],
             "parameters": '{"cart_adds": 10}', "metrics": {}, "registered_at": T, "promoted_at": T},
            {"model_version": "learned-lr-1", "kind": "learned", "status": "challenger", "features": ["cart_adds"],
             "parameters": '{"coefficients": [0.5]}', "training_start": date(2025, 2, 1),
             "training_end": date(2025, 2, 20), "holdout_start": date(2025, 2, 21), "holdout_end": date(2025, 2, 28),
             "metrics": {"auc": 0.8}, "compared_with": "weighted-v1", "registered_at": T},
        ],
        {"model_version": "weighted-v0", "kind": "weighted", "status": "champion", "features": ["cart_adds"],
         "parameters": "{}", "metrics": {}, "registered_at": T, "promoted_at": T},
        "expect_column_values_to_be_unique(champion)",
        ["weighted-v1", "weighted-v0"],
    ),
    "ops.quality_gates": (
        [
            {"table_name": "bronze.events", "passed_version": 3, "checked_rows": 10, "passed_at": T},
            {"table_name": "silver.sessions", "passed_version": 0, "checked_rows": 0, "passed_at": T},
        ],
        {"table_name": "gold.nothing", "passed_version": 1, "checked_rows": 1, "passed_at": T},
        "expect_column_values_to_be_in_set(table_name)",
        ["gold.nothing"],
    ),
    "ops.erasure_requests": (
        [
            {"request_id": "0b9e8c3a-4f1d-4c2e-9a7b-1d2c3e4f5a6b", "subject_type": "user_id", "subject": "u-1",
             "subject_hash": "a" * 64, "requested_at": T, "status": "pending"},
            {"request_id": "1b9e8c3a4f1d4c2e9a7b1d2c3e4f5a6b", "subject_type": "anonymous_id",
             "subject_hash": "b" * 64, "requested_at": T, "status": "purged", "erased_at": T + timedelta(hours=1),
             "purged_at": T + timedelta(days=1), "identifiers": 2, "rows_deleted": {"silver.sessions": 3},
             "table_versions": {"silver.sessions": 7}, "receipt": "{}"},
        ],
        {"request_id": "2b9e8c3a-4f1d-4c2e-9a7b-1d2c3e4f5a6b", "subject_type": "user_id", "subject": "u-2",
         "subject_hash": "c" * 64, "requested_at": T, "status": "erased", "erased_at": T, "receipt": "{}"},
        "expect_column_values_to_be_in_set(subject_kept_after_erasure)",
        ["2b9e8c3a-4f1d-4c2e-9a7b-1d2c3e4f5a6b"],
    ),
}  # fmt: skip


def _frame(spark, table, rows):
    names = table_contract(table).column_names
    return spark.createDataFrame([tuple(row.get(n) for n in names) for row in rows], table_contract(table).schema())


def test_every_suite_reads_only_columns_of_its_table(spark):
    for table in TABLES:
        empty = spark.createDataFrame([], table_contract(table).schema())
        gate = QualityGate.for_table(table)
        assert gate.project(empty).columns == list(gate.columns), table  # analysis fails on an unknown column


# Each run costs ~10 s of GX-on-Spark; the suite runs these five in `make test` (the rest: `-k` by hand).
IN_SUITE = ("bronze.quarantine", "gold.kpis_daily", "gold.user_segments_history", "ops.erasure_requests",
            "ops.pipeline_runs")  # fmt: skip


@pytest.mark.parametrize(
    "table", [t if t in IN_SUITE else pytest.param(t, marks=pytest.mark.skip(reason="by hand")) for t in sorted(CASES)]
)
def test_suite_passes_valid_rows_and_names_a_bad_row(spark, table):
    """One validation of valid rows plus the bad one: exactly the bad row's expectation fails, for exactly
    the bad row's keys, so every valid row passes every expectation (a separate run would prove no more)."""
    valid, bad, expectation, keys = CASES[table]
    failures = QualityGate.for_table(table).failures(_frame(spark, table, [*valid, bad]))
    assert {name: sorted(found) for name, found in failures.items()} == {expectation: sorted(keys)}
