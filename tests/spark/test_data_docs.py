"""Great Expectations Data Docs of the lakehouse: every table's snapshot, counts only, never a row value,
readable offline."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.data_docs import build_data_docs
from spark_jobs.settings import TABLES
from tests.unit.test_data_docs_offline import offline_problems

pytestmark = pytest.mark.spark

PLANTED = "PLANTED-PERSONAL-VALUE-42"
T = datetime(2025, 3, 1, 12, tzinfo=UTC)


def _write(spark, settings, table, rows):
    df = spark.createDataFrame(rows, table_contract(table).schema())
    df.write.format("delta").mode("append").save(str(settings.table_path(table)))


def test_data_docs_report_each_table_and_failures_without_row_values(spark, settings, tmp_path):
    created = ("ops.quality_gates", "ops.erasure_requests")
    ensure_tables(spark, settings, created)
    _write(spark, settings, "ops.quality_gates", [("bronze.events", 3, 10, T), ("silver.sessions", 5, 7, T)])
    receipt = '{"tables": {"silver.sessions": 2}}'
    _write(
        spark,
        settings,
        "ops.erasure_requests",
        [
            ("0b9e8c3a-4f1d-4c2e-9a7b-1d2c3e4f5a6b", "user_id", None, "a" * 64, T, "erased", T, None, 2,
             {"silver.sessions": 2}, {"silver.sessions": 4}, receipt, ["c" * 64], T, None),
            # a failing row: its key and its identifier hold the planted value, which must appear nowhere
            (PLANTED, "user_id", f"{PLANTED}@example.com", "b" * 64, T, "erased", T, None, 1,
             {"silver.sessions": 1}, {"silver.sessions": 4}, receipt, ["d" * 64], T, None),
        ],
    )  # fmt: skip

    out = tmp_path / "docs"
    result = build_data_docs(spark, settings, out)

    assert result["index"] == out / "index.html" and result["index"].is_file()
    assert sorted(result["skipped"]) == sorted(set(TABLES) - set(created))
    assert result["tables"] == {
        "ops.quality_gates": {"success": True, "evaluated": 4, "failed": 0},
        "ops.erasure_requests": {"success": False, "evaluated": 12, "failed": 2},
    }
    assert result["failing"] == ["ops.erasure_requests"]
    index = result["index"].read_text()
    # the index's table of validation results: each suite with its outcome
    status = dict(re.findall(r"'_expectation_suite_name_sort': '(\w+)'.*?'_validation_success_text': '(\w+)'", index))
    assert status == {"ops_quality_gates": "Success", "ops_erasure_requests": "Failed"}
    for suite in status:  # each suite's own page is linked
        assert f'href="expectations/{suite}.html"' in index
    (page,) = (out / "validations" / "ops_erasure_requests").rglob("*.html")
    html = page.read_text()
    assert "Failed" in html and "1 unexpected values found" in html
    assert "values must match this regular expression" in html  # the failing request_id check is shown
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 3
    leaked = [str(p.relative_to(out)) for p in files if PLANTED.encode() in p.read_bytes()]
    assert leaked == [], f"row values in Data Docs: {leaked}"
    assert not [p for p in out.rglob("*.html") if "dataContextId" in p.read_text()]
    # offline: every page is styled and scripted from the site itself, and each file it loads is there
    assert offline_problems(out) == []
    assert '<script src="static/vendor/jquery/jquery.min.js"></script>' in index
    assert "static/vendor/intentlake/bootstrap-table-lite.js" in index  # draws the tables checked above


def test_data_docs_withhold_errors_that_quote_a_row_value(spark, settings, tmp_path):
    """A check Spark cannot evaluate fails with an error quoting the value (ANSI cast); the docs show the
    failure but not the message."""
    suites = tmp_path / "suites"
    suites.mkdir()
    spec = json.loads((settings.expectations_dir / "ops_quality_gates.json").read_text())
    spec["meta"]["columns"]["name_as_number"] = "cast(table_name AS BIGINT)"
    spec["expectations"] = [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "name_as_number", "min_value": 0},
         "meta": {"why": "a check that cannot run on these rows"}},
    ]  # fmt: skip
    (suites / "ops_quality_gates.json").write_text(json.dumps(spec))
    settings = replace(settings, expectations_dir=suites)
    ensure_tables(spark, settings, ("ops.quality_gates",))
    _write(spark, settings, "ops.quality_gates", [(PLANTED, 1, 1, T)])

    result = build_data_docs(spark, settings, tmp_path / "docs")

    assert result["tables"] == {"ops.quality_gates": {"success": False, "evaluated": 1, "failed": 1}}
    files = [p for p in (tmp_path / "docs").rglob("*") if p.is_file()]
    assert not [p for p in files if PLANTED.encode() in p.read_bytes()]
    (page,) = (tmp_path / "docs" / "validations").rglob("*.html")
    assert "withheld" in page.read_text()
