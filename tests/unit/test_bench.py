"""The benchmark's own arithmetic: when an event counts as visible in a layer, and how the tables are built."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.unit

sys.path.insert(0, str(REPO_ROOT / "bench"))  # the benchmarks are scripts, run with bench/ on the path
from freshness import Batch, Commit, _idle_cycle, visible_at  # noqa: E402
from pipeline import freshness_table, run_freshness, scaling_table  # noqa: E402

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


BATCHES = [Batch(at(0), at(40)), Batch(at(45), at(90)), Batch(at(95), at(130))]
COMMITS = [Commit(1, at(30), ()), Commit(2, at(70), ()), Commit(3, at(80), ())]


def test_a_change_is_visible_at_the_first_commit_of_the_first_batch_that_started_after_it():
    # committed upstream at 10 s: the batch running since 0 s did not read it; the one from 45 s did
    assert visible_at(at(10), BATCHES, COMMITS) == at(70)
    assert visible_at(at(45), BATCHES, COMMITS) == at(70)  # committed as the batch started: it was read


def test_a_batch_that_wrote_nothing_makes_the_change_visible_when_it_ends():
    assert visible_at(at(91), BATCHES, COMMITS) == at(130)


def test_a_change_after_the_last_batch_is_not_visible():
    assert visible_at(at(96), BATCHES, COMMITS) is None


def _run(wall: float, pss: int) -> dict:
    return {"wall_s": wall, "peak_pss_bytes": pss}


def test_growth_is_only_against_the_smallest_scale_and_never_divides_by_zero():
    scales = [
        {"scale": 1, "intentlake": {"events": 100, **_run(10.0, 0)}, "references": {"duckdb": {"error": "boom"}}},
        {"scale": 4, "intentlake": {"events": 400, **_run(20.0, 2**20)}, "references": {"duckdb": _run(2.0, 2**20)}},
    ]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in scaling_table(scales)[4:-1]]
    rows = {(c[0], c[1]): c for c in cells}  # implementation, scale, events, wall, time growth, ., PSS, memory growth
    assert rows["intentlake", "4x"][4] == "2.00x" and rows["intentlake", "4x"][7] == ""  # its 1x PSS was 0
    assert rows["duckdb", "1x"][3] == "left out or failed"
    assert rows["duckdb", "4x"][3] == "2.0" and rows["duckdb", "4x"][4] == rows["duckdb", "4x"][7] == ""


def test_chained_layers_are_caught_up_after_an_idle_bronze_run_that_started_once_the_feed_ended():
    from spark_jobs.operations import LayerRun

    def run(layer: str, ended: float, seconds: float = 2.0, new: bool = True) -> tuple[float, LayerRun]:
        return ended, LayerRun(layer, seconds, {"bronze.events": [3, 4 if new else 3]} if layer == "bronze" else {})

    fed = 100.0
    cycles = [run("bronze", 99, new=False), run("bronze", 101), run("silver", 110), run("gold", 115)]
    # an idle bronze run that began before the last file landed proves nothing (it may have missed the file)
    assert _idle_cycle([run("bronze", 101, seconds=3, new=False), run("bronze", 104)], fed) is None
    assert _idle_cycle(cycles, fed) is None  # the last file is through gold, but not yet seen idle
    idle = [*cycles, run("bronze", 121, new=False)]
    assert _idle_cycle(idle, fed) is None  # silver might still have had something: wait for the next step
    assert _idle_cycle([*idle, run("bronze", 127, new=False)], fed) == 121
    assert _idle_cycle([*idle, run("silver", 130)], fed) is None


def test_a_failed_freshness_run_is_reported_not_raised(tmp_path):
    # the child refuses its arguments before any Spark starts: the run's result says so, nothing is raised
    args = SimpleNamespace(freshness_events=10, freshness_files=1, freshness_interval=1.0, trigger="5 seconds",
                           freshness_skip=1, freshness_mode="chained")  # fmt: skip
    failed = run_freshness(args, tmp_path)
    assert failed["returncode"] == 2 and "leaves no file" in failed["error"]
    assert "failed (exit 2)" in "\n".join(freshness_table(failed))
