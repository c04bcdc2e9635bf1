"""tune_signals (spark_jobs/gold/tuning.py): a proposal of weights and thresholds fitted to simulated outcomes is
written beside config/, never into it, passes the config loaders, and is the same file for the same data.

The simulated lakehouse (5,000 events over three days through bronze and silver) and the first proposal are
built once per test run and shared with tests/integration/test_tune_signals_dag.py (`tuning_data`,
`first_proposal`), so the DAG test only adds its Airflow run.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from spark_jobs.config import check_rules_compile, load_models, load_scoring, load_segments
from spark_jobs.gold import tuning
from spark_jobs.gold.tuning import FILES, TuningRefused, propose
from spark_jobs.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.spark

UNTIL = date(2026, 11, 6)  # the simulated sessions are on 2026-11-01 .. 2026-11-05 (UTC)
CONFIG_FILES = ("scoring.yaml", "segments.yaml", "models.yaml")
_SHARED: dict[str, Any] = {}  # one lakehouse and one first proposal per test run (both test modules)


def tuning_data(spark, tmp_path_factory) -> Settings:
    """Simulated events through bronze and silver, with config/scoring.yaml's weighted-v1 as champion."""
    if "settings" not in _SHARED:
        from spark_jobs.bronze import job as bronze
        from spark_jobs.contracts import ensure_tables
        from spark_jobs.gold import models
        from spark_jobs.silver import job as silver
        from spark_jobs.simulate import simulate

        root = tmp_path_factory.mktemp("tuning") / "lakehouse"
        settings = replace(Settings.from_env().with_root(root), shuffle_partitions=2, max_files_per_trigger=1000)
        simulate(settings.landing, settings.truth, events=5_000, seed=11, days=3, malformed_rate=0.0,
                 lines_per_file=5_000)  # fmt: skip
        bronze.run(spark, settings)
        silver.run(spark, settings)
        ensure_tables(spark, settings, ("ops.models",))  # what gold's first run registers, without scoring
        models.resolve_champion(spark, settings, load_scoring(settings.scoring_file), datetime(2026, 11, 6, tzinfo=UTC))
        _SHARED["settings"] = settings
    return _SHARED["settings"]


def first_proposal(spark, settings: Settings) -> tuning.Proposal:
    """The proposal for UNTIL, written to its own folder (not the default one the DAG writes)."""
    if "proposal" not in _SHARED:
        _SHARED["proposal"] = propose(spark, settings, UNTIL, settings.lakehouse.parent / "first-proposal")
    return _SHARED["proposal"]


def read_files(folder: Path, names=FILES) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.fixture
def data(spark, tmp_path_factory) -> Settings:
    return tuning_data(spark, tmp_path_factory)


@pytest.fixture
def proposal(spark, data) -> tuning.Proposal:
    return first_proposal(spark, data)


def test_a_proposal_passes_the_config_loaders_and_says_how_it_did(spark, data, proposal, tmp_path):
    out = proposal.out_dir
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    report = json.loads((out / "proposal.json").read_text())
    current, proposed = report["current"], report["proposed"]
    print(f"window {report['window']['first']}..{report['window']['last']}: {report['rows']} closed sessions, "
          f"{report['positives']} converted")  # fmt: skip
    for label, side in (("current", current), ("proposed", proposed)):
        m = side["metrics"]
        print(f"{label:>8} {side['model_version']:<28} threshold {side['score_threshold']:>4}: AUC {m['auc']:.4f}, "
              f"precision {m['precision_at_threshold']:.3f}, recall {m['recall_at_threshold']:.3f}")  # fmt: skip
    print(f"weights {proposed['weights']}; segments {[(s['rule'], s['proposed']) for s in report['segments']]}")

    # the proposed scoring.yaml: same signals, transforms and caps; non-negative weights adding up to 1; new version
    before, after = load_scoring(data.scoring_file), load_scoring(out / "scoring.yaml")
    assert after.model_version == f"{before.model_version}-tuned-{UNTIL}" == proposal.proposed.model_version
    assert [replace(s, weight=0.0) for s in after.signals] == [replace(s, weight=0.0) for s in before.signals]
    weights = [s.weight for s in after.signals]
    assert all(w >= 0 for w in weights) and math.isclose(sum(weights), 1.0, abs_tol=1e-9)
    assert all(round(w, 3) == w for w in weights)
    assert weights == [s.weight for s in proposal.proposed.signals]
    assert weights != [s.weight for s in before.signals]
    # segments and thresholds: valid files, and only plain intent_score lower bounds moved
    rules = load_segments(out / "segments.yaml")
    check_rules_compile(spark, out / "segments.yaml", rules)
    assert load_models(out / "models.yaml").score_threshold == proposed["score_threshold"]
    by_name = {s["rule"]: s for s in report["segments"]}
    assert by_name["High Intent"]["tuned"] and by_name["High Intent"]["proposed"].endswith(" AND page_depth >= 3")
    assert not by_name["Disinterested"]["tuned"] and "OR" in by_name["Disinterested"]["why"]
    assert {r.name: r.when for r in rules} == {
        r.name: by_name.get(r.name, {}).get("proposed", r.when) for r in load_segments(data.segments_file)
    }
    # figures for both on the same window
    assert report["rows"] == current["metrics"]["rows"] == proposed["metrics"]["rows"] >= 200
    assert report["positives"] == proposed["metrics"]["positives"] >= tuning.MIN_POSITIVES
    for side in (current, proposed):
        assert {"auc", "precision_at_threshold", "recall_at_threshold"} <= side["metrics"].keys()
    assert report["champion"] == {"model_version": "weighted-v1", "kind": "weighted"}

    # the diff applies to the current files and gives the proposed ones
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "config", copy / "config")
    done = subprocess.run(["git", "apply", str(out / "proposal.diff")], cwd=copy, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert read_files(copy / "config", CONFIG_FILES) == read_files(out, CONFIG_FILES)


def test_a_rerun_writes_the_same_bytes_and_config_is_never_touched(spark, data, proposal, tmp_path):
    config_before = read_files(data.config_dir, CONFIG_FILES)
    again = propose(spark, data, UNTIL, tmp_path / "again")
    assert read_files(data.config_dir, CONFIG_FILES) == config_before
    assert read_files(again.out_dir) == read_files(proposal.out_dir)


def test_too_little_data_refuses_and_writes_nothing(spark, data, tmp_path, monkeypatch):
    with pytest.raises(TuningRefused, match=r"0 closed sessions from 2026-10-04 to 2026-10-31 .*at least 200"):
        propose(spark, data, date(2026, 11, 1), tmp_path / "empty")  # the window ends before the data begins
    monkeypatch.setattr(tuning, "MIN_POSITIVES", 10_000)
    with pytest.raises(TuningRefused, match=r"converted and \d+ not converted .*at least 10000 of each"):
        propose(spark, data, UNTIL, tmp_path / "thin")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "thin").exists()
    assert not (data.lakehouse / "proposals" / "tune_signals" / "2026-11-01").exists()


# ---------------------------------------------------------------- the pure parts


def test_weights_round_to_units_that_add_up_exactly():
    units = tuning.rounded_weights([4.499, 1.005, 0.481, 0.0, 0.0, 0.0, 0.0])
    assert sum(units) == 1000 and units[3:] == [0, 0, 0, 0]
    assert tuning.rounded_weights([1.0, 1.0, 1.0]) == [334, 333, 333]  # the remainder tie goes to the first
    assert [tuning.weight_text(u) for u in (250, 0, 1000, 75)] == ["0.25", "0.0", "1.0", "0.075"]
    with pytest.raises(ValueError):
        tuning.rounded_weights([0.0, 0.0])


def test_only_a_plain_lower_bound_in_a_top_level_and_is_tuned():
    assert tuning.score_bound("intent_score >= 70 AND page_depth >= 3") == (
        ["page_depth >= 3"], "intent_score >= 70", 70.0
    )  # fmt: skip
    assert tuning.score_bound("intent_score > 55.5") == ([], "intent_score > 55.5", 55.5)
    assert tuning.score_bound("x = 'a AND b' AND (p OR q) AND intent_score >= 3")[2] == 3.0
    for when in ("moments_ad_fatigue > 0 OR (sessions_28d >= 5 AND intent_score < 20)", "intent_score < 20",
                 "NOT intent_score >= 70", "intent_score BETWEEN 20 AND 70", "intent_score >= 50 AND intent_score < 90",
                 "intent_score + page_depth >= 70"):  # fmt: skip
        assert isinstance(tuning.score_bound(when), str), when


def test_the_threshold_with_the_best_f1_wins_and_ties_stay_near_the_current_one():
    # floor(score) -> (sessions, converted); 12 converted in all, 2 of them where the rule never looks
    buckets = {10: (50, 0), 40: (10, 2), 60: (5, 3), 80: (5, 5)}
    best = tuning.best_threshold(buckets, positives=12, current=70)
    assert (best.value, best.flagged, best.hits) == (60, 10, 8)  # 41..60 tie at the best F1 16/22: nearest 70
    assert best.f1 == Fraction(16, 22) and best.precision == 0.8 and best.recall == pytest.approx(8 / 12)
    assert tuning.best_threshold(buckets, positives=12, current=20).value == 41
    assert tuning.best_threshold(buckets, positives=12, current=50).value == 50
    assert tuning.best_threshold(buckets, positives=0, current=70) is None


def test_the_rewritten_files_keep_everything_but_the_tuned_values():
    text = (REPO_ROOT / "config" / "scoring.yaml").read_text()
    weights = {"dwell": "0.5", "mobile": "0.0", "wishlist": "0.1"}  # wishlist's 0.10 is already 0.1
    out = tuning.render_scoring(text, "weighted-v1-tuned-2026-11-06", weights)
    changed = [(a, b) for a, b in zip(text.splitlines(), out.splitlines(), strict=True) if a != b]
    assert changed == [("model_version: weighted-v1", "model_version: weighted-v1-tuned-2026-11-06"),
                       ("    weight: 0.25", "    weight: 0.5"), ("    weight: 0.05", "    weight: 0.0")]  # fmt: skip
    assert tuning.tuned_version("weighted-v1-tuned-2026-11-06", date(2026, 11, 13)) == "weighted-v1-tuned-2026-11-13"
    models_text = (REPO_ROOT / "config" / "models.yaml").read_text()
    assert yaml.safe_load(tuning.render_models(models_text, 64))["promotion"]["score_threshold"] == 64
