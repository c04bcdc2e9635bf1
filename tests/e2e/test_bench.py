"""`make bench` on a tiny input: the benchmark runs end to end and its figures hold together.

No timing is asserted (figures live in bench/README.md); what is checked is that the references agree with
silver.sessions (so their ratios are printed), and that the freshness run saw every measured event reach
silver and gold, each no earlier than the layer before it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_bench_pipeline_smoke_run(tmp_path):
    results = tmp_path / "results"
    command = [
        sys.executable, str(REPO_ROOT / "bench" / "pipeline.py"),
        "--events", "1500", "--references", "pandas,duckdb", "--results", str(results),
        "--freshness-events", "600", "--freshness-files", "3", "--freshness-interval", "3", "--freshness-skip", "1",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    [written] = results.glob("*.json")
    result = json.loads(written.read_text())
    [scale] = result["scales"]
    intentlake = scale["intentlake"]
    assert intentlake["events"] > 1000 and intentlake["sessions"] > 0
    assert set(intentlake["layer_seconds"]) == {"bronze", "silver", "gold"}
    assert intentlake["peak_jvm_rss_bytes"] > 0 and intentlake["cpu_s"] > 0
    assert {p["job"] for p in intentlake["phases"]} == {"bronze", "silver", "gold"}
    assert sum(p["seconds"] for p in intentlake["phases"]) <= sum(intentlake["layer_seconds"].values())
    for name in ("pandas", "duckdb"):
        ref = scale["references"][name]
        assert ref["same_sessions"], (name, ref["comparison"])
        assert ref["ratio_vs_end_to_end"] is not None

    fresh = result["freshness"]
    assert fresh["events_measured"] > 0
    assert fresh["events_in_silver"] == fresh["events_in_gold"] == fresh["events_measured"]
    bronze, silver, gold = (fresh[f"landing_to_{layer}_s"] for layer in ("bronze", "silver", "gold"))
    assert 0 < bronze["p50"] <= silver["p50"] <= gold["p50"]
    assert bronze["p50"] <= bronze["p99"] <= bronze["max"]

    table = written.with_suffix(".md").read_text()
    assert "| pandas |" in table and "| duckdb |" in table and "## Freshness" in table and "Largest phases" in table
    assert table in run.stdout
