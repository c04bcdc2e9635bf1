"""The whole pipeline (`intentlake run all`: bronze, silver, user features and gold in one process) killed with
kill -9 right after each kind of Delta commit a batch makes, restarted every time, ends with the tables of an
uninterrupted run.

The input comes in two halves. The first goes through the pipeline before the test, so every table exists
and the second half's batches update, merge and rescore what is there. The second half is then run as a
chain: start `run all`, kill it right after the next commit on the list, start it again, and so on; then
let it finish. Each kill lands in a different layer's batch, or in the replay of the batch the previous kill
interrupted: a bronze batch after it wrote its events, a silver batch after each of its table writes (the
device edges, the sessions MERGE, the micro-moments, the identity map), the user features written after
silver, and a gold batch after its scores and after its segments.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from spark_jobs import operations as op
from spark_jobs.settings import TABLES
from spark_jobs.simulate import simulate
from tests.faults import delta_versions, kill_after_commit, start_job
from tests.helpers import portable_rows, table

pytestmark = pytest.mark.e2e

KILLED_AFTER = (
    "bronze.events",
    "silver.identity_edges",
    "silver.sessions",
    "silver.micro_moments",
    "silver.identity_map",
    "silver.user_features",
    "gold.session_scores",
    "gold.user_segments",
)


def _run_all(spark, settings) -> None:
    for _ in op.run_pipeline(op.Lakehouse(settings, spark)):
        pass


def test_the_pipeline_killed_after_each_kind_of_commit_and_restarted_matches_an_uninterrupted_run(
    spark, settings, tmp_path
):
    key = "test-pipeline-kill-hash-key-0123456789"  # both lakehouses' (person ids, keyed identifiers)
    settings = replace(settings, max_files_per_trigger=2, hash_key=key)  # the second half: two bronze batches
    reference = settings.with_root(tmp_path / "reference")
    staging = tmp_path / "staging"
    summary = simulate(staging, settings.truth, events=1200, seed=41, late_rate=0.03, duplicate_rate=0.02,
                       malformed_rate=0.01, lines_per_file=150)  # fmt: skip
    files = sorted(staging.glob("*.ndjson"))  # arrival order (simulate numbers them so)
    halves = files[: len(files) // 2], files[len(files) // 2 :]
    # each lakehouse is built from the input: a copy would not do, as a file stream's checkpoint names its
    # files by absolute path, and moving its landing zone is refused (CheckpointSettingsChanged)
    for root in (settings, reference):
        root.landing.mkdir(parents=True)
        for path in halves[0]:
            shutil.copy2(path, root.landing / path.name)  # keeps the arrival-ordered mtimes
        _run_all(spark, root)
        for path in halves[1]:
            shutil.copy2(path, root.landing / path.name)
    _run_all(spark, reference)  # uninterrupted

    env = {"INTENTLAKE_MAX_FILES_PER_TRIGGER": str(settings.max_files_per_trigger), "INTENTLAKE_HASH_KEY": key}
    for name in KILLED_AFTER:
        path = settings.table_path(name)
        before = delta_versions(path)
        job = start_job(settings, "run", "all", extra_env=env)
        kill_after_commit(job, path, before)
        assert job.returncode == -9, name
    _run_all(spark, settings)  # the last restart, left to finish

    made = [name for name in TABLES if (reference.table_path(name) / "_delta_log").exists()]
    assert {"bronze.events", "silver.sessions", "silver.user_features", "gold.user_segments_history"} <= set(made)
    for name in made:
        assert portable_rows(spark, settings, name) == portable_rows(spark, reference, name), name
    stored = table(spark, settings, "bronze.events")
    assert stored.count() == stored.select("event_id").distinct().count() == summary.events
