"""User-feature config, contract and run planning: pure Python, no Spark session."""

from __future__ import annotations

from datetime import date

import pytest

from spark_jobs.config import InvalidConfigError
from spark_jobs.contracts import table_contract
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver.user_features import TABLE, contract_windows, load_feature_config, plan_as_of_dates

pytestmark = pytest.mark.unit

SHIPPED = REPO_ROOT / "config" / "user_features.yaml"
TODAY = date(2026, 11, 23)


def test_the_contract_has_commented_columns_and_as_of_date_partitions():
    contract = table_contract(TABLE)
    assert contract.columns_ddl.count("COMMENT") == len(contract.column_names)
    assert contract.column_names[0] == "person_id" and contract.column_names[-1] == "as_of_date"
    assert "USING DELTA" in contract.ddl and "PARTITIONED BY (as_of_date)" in contract.ddl
    assert "'intentlake.contract' = 'tables/silver/user_features.sql'" in contract.ddl
    assert contract_windows() == {7, 28}


def test_the_shipped_config_loads():
    cfg = load_feature_config(SHIPPED)
    assert (cfg.feature_version, cfg.short_days, cfg.long_days) == ("user-features-v1", 7, 28)


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("windows: {short_days: 7, long_days: 28}", "feature_version", "non-empty text"),
        ("feature_version: v1\nwindows: {short_days: 7}", "windows.long_days", "whole number of days"),
        ("feature_version: v1\nwindows: {short_days: 7.5, long_days: 28}", "windows.short_days", "whole number"),
        ("feature_version: v1\nwindows: {short_days: true, long_days: 28}", "windows.short_days", "whole number"),
        ("feature_version: v1\nwindows: {short_days: 0, long_days: 28}", "windows.short_days", "at least 1"),
        ("feature_version: v1\nwindows: {short_days: 28, long_days: 7}", "windows.short_days", "shorter than"),
        ("feature_version: v1\nwindows: {short_days: 14, long_days: 28}", "windows.short_days", "sessions_14d"),
        ("feature_version: v1\nwindows: {short_days: 7, long_days: 28, mid_days: 14}", "windows.mid_days",
         "unknown key"),
        ("feature_version: v1\nwindow: {short_days: 7, long_days: 28}", "window", "unknown key"),
        ("feature_version: v1\nwindows: [7, 28]", "windows", "mapping"),
        ("feature_version: [v1", "line 1", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_config_names_the_file_and_the_key(tmp_path, text, key, problem):
    path = tmp_path / "user_features.yaml"
    path.write_text(text)
    with pytest.raises(InvalidConfigError, match=problem) as caught:
        load_feature_config(path)
    assert (caught.value.path, caught.value.where) == (path, key)
    assert str(path) in str(caught.value)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(InvalidConfigError, match="does not exist"):
        load_feature_config(tmp_path / "user_features.yaml")


def _plan(through, **known):
    known = {"last_done": None, "first_session": None, "open_session_day": None, "today": TODAY, **known}
    return plan_as_of_dates(through, **known)


def test_an_empty_table_starts_the_day_after_the_first_session():
    plan = _plan(date(2026, 9, 4), first_session=date(2026, 9, 1))
    assert plan.dates == (date(2026, 9, 2), date(2026, 9, 3), date(2026, 9, 4)) and plan.held_back is None


def test_a_filled_table_continues_after_its_last_date_and_a_rerun_plans_nothing():
    assert _plan(date(2026, 9, 6), last_done=date(2026, 9, 4), first_session=date(2026, 9, 1)).dates == (
        date(2026, 9, 5),
        date(2026, 9, 6),
    )
    assert _plan(date(2026, 9, 4), last_done=date(2026, 9, 4), first_session=date(2026, 9, 1)).dates == ()


def test_no_sessions_plans_nothing_and_an_explicit_start_recomputes():
    assert _plan(date(2026, 9, 4)).dates == ()
    plan = _plan(date(2026, 9, 4), last_done=date(2026, 9, 4), start=date(2026, 9, 3))
    assert plan.dates == (date(2026, 9, 3), date(2026, 9, 4))


def test_the_plan_stops_at_the_earliest_open_session_and_at_today():
    waiting = _plan(date(2026, 9, 10), last_done=date(2026, 9, 4), open_session_day=date(2026, 9, 6))
    assert waiting.dates == (date(2026, 9, 5), date(2026, 9, 6)) and "still open" in waiting.held_back
    future = _plan(date(2026, 11, 25), last_done=date(2026, 11, 21))
    assert future.dates == (date(2026, 11, 22), TODAY) and "after today" in future.held_back
