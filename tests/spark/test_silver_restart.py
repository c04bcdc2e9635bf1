"""Silver killed mid-batch and restarted ends with the tables of an uninterrupted run."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.privacy import hash_key
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from tests.faults import kill_mid_batch, start_job
from tests.helpers import rows, table

pytestmark = pytest.mark.spark


def test_silver_killed_mid_batch_and_restarted_matches_an_uninterrupted_run(spark, settings, tmp_path):
    simulate(settings.landing, settings.truth, events=3000, seed=8, late_rate=0.05, lines_per_file=500)
    bronze.run(spark, replace(settings, max_files_per_trigger=2))  # bronze in several commits (12 files)
    few_files = replace(settings, silver_max_files_per_trigger=3)  # 3 bronze files per silver batch: 4 batches

    # the same keyed-hash key as the killed run's lakehouse (its generated one), or email hashes would differ
    same_key = hash_key(settings).decode()
    reference = replace(few_files.with_root(tmp_path / "reference"), shuffle_partitions=2, hash_key=same_key)
    shutil.copytree(settings.table_path("bronze.events"), reference.table_path("bronze.events"))
    silver.run(spark, reference)

    job = start_job(settings, "run", "silver", "--trigger", "1 second",
                    extra_env={"INTENTLAKE_SILVER_MAX_FILES_PER_TRIGGER": "3"})  # fmt: skip
    # killed after the batch merged silver.sessions, before its moments, re-attribution, run record and commit
    sessions = settings.table_path("silver.sessions")
    killed_in = kill_mid_batch(job, settings.checkpoint("silver"), after_write_to=sessions)
    assert killed_in >= 1 and job.returncode == -9
    assert not table(spark, settings, "ops.pipeline_runs").filter(f"job = 'silver' AND batch_id = {killed_in}").count()
    silver.run(spark, few_files)  # restart on the same checkpoint

    batches = table(spark, settings, "ops.pipeline_runs").filter("job = 'silver'")
    assert batches.select("batch_id").distinct().count() > 2  # the comparison spans several batches
    for name in ("silver.sessions", "silver.micro_moments", "silver.late_events", "silver.identity_map"):
        assert rows(spark, settings, name) == rows(spark, reference, name), name
    assert table(spark, settings, "silver.sessions").count() > 100
