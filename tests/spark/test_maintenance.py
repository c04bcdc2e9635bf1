"""OPTIMIZE compacts without changing a row; VACUUM keeps what retained versions need and refuses unsafe
retention."""

from __future__ import annotations

import os
import time

import pytest

from spark_jobs.contracts import ensure_tables
from spark_jobs.maintenance import MaintenanceError, optimize, vacuum
from tests.helpers import table
from tests.spark.test_gold import MODEL, _sessions

pytestmark = pytest.mark.spark


def test_optimize_compacts_small_files_and_keeps_every_row_and_version(spark, settings):
    from spark_jobs.gold.scoring import score_sessions

    ensure_tables(spark, settings, ("gold.session_scores",))
    path = str(settings.table_path("gold.session_scores"))
    for n in range(6):  # six micro-batches, six small files in one partition
        scored = score_sessions(_sessions(spark, [(f"s{n}", f"p{n % 2}", n, 10.0, n % 2, "mobile", 2, 5)]), MODEL)
        columns = table(spark, settings, "gold.session_scores").columns
        rows = scored.withColumn("segment", scored.model_version).select(*columns)
        rows.coalesce(1).write.format("delta").mode("append").save(path)
    before = sorted(table(spark, settings, "gold.session_scores").collect())
    result = optimize(spark, settings, "gold.session_scores")
    assert (result.files_removed, result.files_added, result.zorder_by) == (6, 1, ("person_id",))
    assert sorted(table(spark, settings, "gold.session_scores").collect()) == before
    assert spark.read.format("delta").option("versionAsOf", 6).load(path).count() == 6  # time travel intact
    assert optimize(spark, settings, "gold.session_scores").files_removed == 0  # a re-run has nothing to do

    # VACUUM: the compacted-away files are younger than the retention and stay; an orphan older than it goes
    with pytest.raises(MaintenanceError, match="below the 168 h floor"):
        vacuum(spark, settings, "gold.session_scores", retention_hours=1)
    orphan = settings.table_path("gold.session_scores") / "session_date=2026-11-02" / "part-orphan.parquet"
    orphan.write_bytes(b"left by a crashed writer")
    old = time.time() - 9 * 24 * 3600
    os.utime(orphan, (old, old))
    assert vacuum(spark, settings, "gold.session_scores") == 1
    assert not orphan.exists()
    assert spark.read.format("delta").option("versionAsOf", 6).load(path).count() == 6
