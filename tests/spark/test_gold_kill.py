"""Gold killed mid-batch (kill -9) and restarted ends with the gold tables of an uninterrupted run.

Gold reads silver.sessions' Change Data Feed with Delta's default admission (1,000 files per micro-batch)
and has no setting to lower it, so one gold run over a small input is one micro-batch. The input is
therefore prepared in two halves: the first goes through bronze, silver and gold (gold batch 0, committed),
the second through bronze and silver only. The gold run under test then has batch 1 to do: it rescores
persons who already have scores, segments and open history spells, so it updates, deletes and closes
spells, not only inserts.
"""

from __future__ import annotations

import os
import shutil

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from spark_jobs.bronze import job as bronze
from spark_jobs.gold import job as gold
from spark_jobs.silver import job as silver
from spark_jobs.simulate import simulate
from spark_jobs.streaming import checkpoint_query_id
from tests.faults import kill_mid_batch, start_job
from tests.helpers import rows, table

pytestmark = pytest.mark.spark

# valid_from / valid_to are gold.user_segments commit times (tables/gold/user_segments_history.sql): wall-clock
# times of whichever run made the commit, so they differ between two correct runs and `rows` leaves them out
# (tests/helpers.BOOKKEEPING). They are checked against the killed run's own commit log instead
# (_assert_spells_at_commit_times). No other gold column holds a wall-clock time: session_scores and
# user_segments carry only values derived from silver and the model.
GOLD = ("gold.session_scores", "gold.user_segments", "gold.user_segments_history")


def _prepare(spark, settings, tmp_path) -> None:
    """Bronze, silver and gold on the first half of the landing files; bronze and silver on the second."""
    staging = tmp_path / "staging"
    simulate(staging, settings.truth, events=1200, seed=31, late_rate=0.03, lines_per_file=150)
    files = sorted(staging.glob("*.ndjson"))  # arrival order (simulate numbers them so)
    settings.landing.mkdir(parents=True, exist_ok=True)
    for first, half in ((True, files[: len(files) // 2]), (False, files[len(files) // 2 :])):
        for path in half:
            os.replace(path, settings.landing / path.name)  # keeps the arrival-ordered mtimes
        bronze.run(spark, settings)
        silver.run(spark, settings)
        if first:
            gold.run(spark, settings)


def _assert_spells_at_commit_times(spark, settings) -> None:
    """Each spell opens and closes at the commit times of its gold.user_segments versions; one open spell
    per person at most."""
    path = str(settings.table_path("gold.user_segments"))
    commits = DeltaTable.forPath(spark, path).history().select("version", "timestamp")
    spells = table(spark, settings, "gold.user_segments_history")
    opened = spells.join(commits.withColumnRenamed("version", "source_version"), "source_version", "left")
    closed = spells.join(commits.withColumnRenamed("version", "closed_version"), "closed_version", "left")
    assert opened.filter(~F.col("valid_from").eqNullSafe(F.col("timestamp"))).count() == 0
    assert closed.filter(~F.col("valid_to").eqNullSafe(F.col("timestamp"))).count() == 0
    assert spells.filter("valid_to IS NULL").groupBy("person_id").count().filter("count > 1").count() == 0


def _gold_runs(spark, settings) -> dict[int, int]:
    """{batch_id: input_rows} of the gold stream's run records, asserting one record per batch."""
    runs = table(spark, settings, "ops.pipeline_runs").filter("job = 'gold'")
    assert runs.count() == runs.select("query_id", "batch_id").distinct().count(), "a gold batch recorded twice"
    query_id = checkpoint_query_id(settings.checkpoint("gold"))
    assert runs.filter(F.col("query_id") != query_id).count() == 0  # no rescore batch in this test
    return {r.batch_id: r.input_rows for r in runs.collect()}


def test_gold_killed_mid_batch_and_restarted_matches_an_uninterrupted_run(spark, settings, tmp_path):
    _prepare(spark, settings, tmp_path)
    reference = settings.with_root(tmp_path / "reference")
    shutil.copytree(settings.lakehouse, reference.lakehouse)
    gold.run(spark, reference)

    job = start_job(settings, "run", "gold")
    # killed after batch 1 merged gold.session_scores, before (or while) it merges segments and history,
    # records the run and commits
    scores = settings.table_path("gold.session_scores")
    killed_in = kill_mid_batch(job, settings.checkpoint("gold"), after_write_to=scores)
    assert (killed_in, job.returncode) == (1, -9)
    assert _gold_runs(spark, settings).keys() == {0}
    gold.run(spark, settings)  # restart on the same checkpoint

    assert _gold_runs(spark, settings) == _gold_runs(spark, reference)
    for name in GOLD:
        assert rows(spark, settings, name) == rows(spark, reference, name), name
    for root in (settings, reference):
        _assert_spells_at_commit_times(spark, root)
    history = table(spark, settings, "gold.user_segments_history")
    assert history.filter("closed_version IS NOT NULL").count() > 0  # batch 1 moved people between segments
    assert table(spark, settings, "gold.user_segments").count() > 20  # 1,200 events: about 40 persons
