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

    # a worker's one session serves every Spark test it runs for the whole suite: 6 GB of heap, not 4, for margin
    base = replace(Settings.from_env().with_root(tmp_path_factory.mktemp("spark")), shuffle_partitions=2,
                   spark_conf={"spark.driver.memory": "6g"})  # fmt: skip
    session = build_spark(base, app_name="intentlake-tests")
    yield session
    session.stop()


@pytest.fixture(scope="module", autouse=True)
def _forget_delta_logs():
    """After each module, drop the Delta logs the shared session has cached. Delta keeps every table path it has
    read in a process-wide cache (~16 MB per lakehouse of this project's tables, measured); a test worker's one
    session reads hundreds of temp lakehouses, and without this its 4 GB heap fills up late in the suite
    ("Not enough memory to build and broadcast the table"). A real pipeline reads one lakehouse."""
    yield
    import sys

    if "pyspark" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session._jvm.org.apache.spark.sql.delta.DeltaLog.clearCache()
        session.catalog.clearCache()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose lakehouse, landing zone and checkpoints live in this test's temp dir."""
    return replace(Settings.from_env().with_root(tmp_path / "lakehouse"), shuffle_partitions=2)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis server for this test process (scripts/redis.sh, on a free loopback port); tests keep apart
    by key prefix (`online_settings`)."""
    import os
    import socket
    import subprocess

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INTENTLAKE_REDIS_DIR": str(tmp_path_factory.mktemp("redis")),
           "INTENTLAKE_REDIS_PORT": str(port)}  # fmt: skip
    script = Path(__file__).resolve().parents[1] / "scripts" / "redis.sh"
    subprocess.run([str(script), "up"], env=env, check=True, timeout=300, capture_output=True)
    server = RedisServer(f"redis://127.0.0.1:{port}/0", script, env)
    yield server
    subprocess.run([str(script), "down"], env=env, timeout=60, capture_output=True)


class RedisServer(str):
    """The server's URL (a str), and how to restart it: a restart loses every key (nothing is persisted)."""

    def __new__(cls, url: str, script: Path, env: dict[str, str]) -> RedisServer:
        server = super().__new__(cls, url)
        server.script, server.env = script, env
        return server

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        import subprocess

        subprocess.run([str(self.script), "down"], env=self.env, check=True, timeout=120, capture_output=True)

    def start(self) -> None:
        import subprocess

        subprocess.run([str(self.script), "up"], env=self.env, check=True, timeout=120, capture_output=True)


@pytest.fixture
def online_settings(settings: Settings, redis_url: str, request) -> Settings:
    """`settings` with the online store on the test process's Redis, under a prefix of this test's own."""
    import hashlib

    prefix = "t" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10] + ":"
    return replace(settings, redis_url=str(redis_url), redis_prefix=prefix)
