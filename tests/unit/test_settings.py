"""Settings come from INTENTLAKE_* variables, with clear errors for unusable values."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_jobs.settings import Settings, SettingsError, interval_seconds

pytestmark = pytest.mark.unit


def test_defaults_put_everything_under_the_lakehouse_root(monkeypatch, tmp_path):
    monkeypatch.setenv("INTENTLAKE_LAKEHOUSE", str(tmp_path / "lh"))
    settings = Settings.from_env()
    assert settings.table_path("bronze.events") == tmp_path / "lh" / "bronze" / "events"
    assert settings.landing == tmp_path / "lh" / "landing"
    assert settings.spark_master == "local[*]" and settings.session_timeout == "5 minutes"


def test_cluster_master_and_extra_confs_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("INTENTLAKE_SPARK_MASTER", "spark://10.0.0.1:7077")
    monkeypatch.setenv("INTENTLAKE_SPARK_CONF", "spark.executor.memory=8g, spark.executor.cores=4")
    settings = Settings.from_env()
    assert settings.spark_master == "spark://10.0.0.1:7077"
    assert settings.spark_conf == {"spark.executor.memory": "8g", "spark.executor.cores": "4"}


@pytest.mark.parametrize(("name", "value", "message"), [
    ("SHUFFLE_PARTITIONS", "four", "not a whole number"),
    ("SPARK_CONF", "spark.executor.memory", "not key=value"),
    ("LAKEHOUSE", "s3a://bucket/lakehouse", "is a URI"),  # Path would make it ./s3a:/bucket/lakehouse
    ("CHECKPOINTS", "abfss://c@account.dfs.core.windows.net/x", "is a URI"),
    ("EXPECTATIONS_DIR", "gs://bucket/suites", "is a URI"),
    ("REDIS_URL", "http://127.0.0.1:6379", "must start with redis://"),
    ("ONLINE_TTL_DAYS", "0", "1 or more days"),
])  # fmt: skip
def test_unusable_values_name_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(f"INTENTLAKE_{name}", value)
    with pytest.raises(SettingsError, match=message) as caught:
        Settings.from_env()
    assert f"INTENTLAKE_{name}" in str(caught.value)


def test_intervals():
    assert interval_seconds("5 minutes") == 300
    assert interval_seconds("1 hour") == 3600
    assert interval_seconds("24 hours") == 86400
    with pytest.raises(SettingsError, match="expected"):
        interval_seconds("5 mins")


def test_with_root_moves_every_data_path(tmp_path):
    moved = Settings.from_env().with_root(tmp_path)
    assert moved.checkpoint("bronze") == tmp_path / "_checkpoints" / "bronze"
    assert moved.truth == tmp_path / "_truth"
    assert isinstance(moved.config_dir, Path)


def test_every_plain_setting_is_read_from_its_variable(monkeypatch):
    monkeypatch.setenv("INTENTLAKE_ALLOWED_LATENESS", "2 hours")
    monkeypatch.setenv("INTENTLAKE_MAX_OFFSETS_PER_TRIGGER", "1000")
    monkeypatch.setenv("INTENTLAKE_SPARK_UI", "true")
    settings = Settings.from_env()
    assert (settings.allowed_lateness, settings.max_offsets_per_trigger, settings.spark_ui) == ("2 hours", 1000, True)


def test_a_bad_interval_is_named_when_settings_load(monkeypatch):
    monkeypatch.setenv("INTENTLAKE_SESSION_TIMEOUT", "five minutes")
    with pytest.raises(SettingsError, match="INTENTLAKE_SESSION_TIMEOUT='five minutes'"):
        Settings.from_env()


def test_bronze_default_limits_are_the_settings_defaults(monkeypatch):
    from spark_jobs.bronze.normalize import DEFAULT_LIMITS, Limits

    assert DEFAULT_LIMITS == Limits(max_record_bytes=1_048_576, max_clock_skew_s=3_600, max_event_age_s=30 * 86_400)
    monkeypatch.setenv("INTENTLAKE_MAX_CLOCK_SKEW", "10 minutes")
    assert Limits.from_settings(Settings.from_env()).max_clock_skew_s == 600


def test_env_example_lists_every_setting():
    from dataclasses import fields

    listed = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    names = [f"INTENTLAKE_{f.name.upper()}" for f in fields(Settings)]
    missing = [name for name in names if f"{name}=" not in listed]
    assert missing == []


def test_the_redis_url_is_never_shown(monkeypatch):
    monkeypatch.setenv("INTENTLAKE_REDIS_URL", "redis://:s3cret-pass@127.0.0.1:16379/0")
    assert "s3cret" not in repr(Settings.from_env())
    monkeypatch.setenv("INTENTLAKE_REDIS_URL", "https://:s3cret-pass@127.0.0.1:16379/0")
    with pytest.raises(SettingsError) as refused:
        Settings.from_env()
    assert "s3cret" not in str(refused.value)
