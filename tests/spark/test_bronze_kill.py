"""Exactly-once under kill -9: the bronze process dies mid-batch, a restart stores each event once."""

from __future__ import annotations

from dataclasses import replace

import pytest

from spark_jobs.bronze import job as bronze
from spark_jobs.simulate import simulate
from tests.faults import kill_mid_batch, start_job
from tests.helpers import assert_each_event_once

pytestmark = pytest.mark.spark


def test_bronze_killed_mid_batch_and_restarted_holds_each_event_once(spark, settings):
    summary = simulate(settings.landing, settings.truth, events=3000, seed=21, duplicate_rate=0.05,
                       malformed_rate=0.02, lines_per_file=300)  # fmt: skip
    job = start_job(settings, "run", "bronze", "--trigger", "1 second",
                    extra_env={"INTENTLAKE_MAX_FILES_PER_TRIGGER": "1"})  # fmt: skip
    killed_in = kill_mid_batch(job, settings.checkpoint("bronze"))
    assert killed_in >= 1 and job.returncode == -9

    bronze.run(spark, replace(settings, max_files_per_trigger=4))  # restart on the same checkpoint

    assert_each_event_once(spark, settings, events=summary.events, malformed=summary.malformed, lines=summary.lines)
