"""Shared fixtures: one Spark session for the whole run; a fresh lakehouse root per test."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from spark_jobs.settings import Settings


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """A Delta-enabled local session: 2 shuffle partitions, UI off, jars from the local cache."""
    from spark_jobs.spark import build_spark

    base = replace(Settings.from_env().with_root(tmp_path_factory.mktemp("spark")), shuffle_partitions=2)
    session = build_spark(base, app_name="intentlake-tests")
    yield session
    session.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose lakehouse, landing zone and checkpoints live in this test's temp dir."""
    return replace(Settings.from_env().with_root(tmp_path / "lakehouse"), shuffle_partitions=2)
