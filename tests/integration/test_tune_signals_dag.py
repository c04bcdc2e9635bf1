"""The tune_signals DAG with `dag.test()` (tests/dag_runner.py) on the simulated lakehouse of
tests/spark/test_tuning.py: the task succeeds, the proposal lands in the lakehouse's proposals folder, and it
is byte for byte the proposal the library wrote in this process for the same day (another Spark session). A run
killed with SIGKILL as its files are being written and retried leaves that same proposal."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

from spark_jobs.gold.tuning import FILES
from spark_jobs.settings import REPO_ROOT
from tests.dag_runner import airflow_env, killed_and_retried, migrate, run_dag
from tests.spark.test_tuning import CONFIG_FILES, UNTIL, first_proposal, read_files, tuning_data

pytestmark = pytest.mark.integration


def test_the_weekly_dag_writes_a_proposal_for_the_day_its_interval_ends(spark, tmp_path_factory, tmp_path):
    settings = tuning_data(spark, tmp_path_factory)
    twin = replace(settings.with_root(tmp_path / "twin" / "lakehouse"), shuffle_partitions=settings.shuffle_partitions)
    shutil.copytree(settings.lakehouse, twin.lakehouse)  # for a run killed mid-task, below
    config_before = read_files(REPO_ROOT / "config", CONFIG_FILES)
    env = airflow_env(tmp_path / "airflow", settings.lakehouse)
    migrate(env)
    # a timedelta schedule runs on a point in time: the interval ends at the logical date
    result, log = run_dag(env, "tune_signals", f"{UNTIL.isoformat()}T00:00:00+00:00")
    assert result["state"] == "success", log[-3000:]
    assert result["tasks"] == {"propose_tuning": "success"}

    out = settings.lakehouse / "proposals" / "tune_signals" / UNTIL.isoformat()
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    report = json.loads((out / "proposal.json").read_text())
    assert report["until"] == UNTIL.isoformat() and report["proposed"]["model_version"].endswith(f"-tuned-{UNTIL}")
    assert read_files(REPO_ROOT / "config", CONFIG_FILES) == config_before
    assert read_files(out) == read_files(first_proposal(spark, settings).out_dir)

    # killed as soon as the first proposal file is written, and retried
    twin_env = airflow_env(tmp_path / "twin" / "airflow", twin.lakehouse)
    migrate(twin_env)
    twin_out = twin.lakehouse / "proposals" / "tune_signals" / UNTIL.isoformat()
    when = lambda: twin_out.is_dir() and any(twin_out.iterdir())  # noqa: E731
    killed = killed_and_retried(twin_env, "tune_signals", f"{UNTIL.isoformat()}T00:00:00+00:00", when)
    assert killed == {"propose_tuning": "running"}
    assert read_files(twin_out) == read_files(out)
