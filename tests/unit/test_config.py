"""Config loading: the shipped configs are valid; each kind of mistake names the file, rule and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spark_jobs.config import InvalidConfigError, load_scoring, load_segments, referenced_names
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.unit

SCORING = REPO_ROOT / "config" / "scoring.yaml"
SEGMENTS = REPO_ROOT / "config" / "segments.yaml"


def _write(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def _scoring_with(**signal_changes) -> dict:
    doc = yaml.safe_load(SCORING.read_text())
    for name, change in signal_changes.items():
        if change is None:
            doc["signals"].pop(name)
        else:
            doc["signals"][name] = {**doc["signals"].get(name, {}), **change}
    return doc


def test_shipped_configs_load():
    model = load_scoring(SCORING)
    rules = load_segments(SEGMENTS)
    assert abs(sum(s.weight for s in model.signals) - 1) < 1e-9
    assert rules[-1].when == "true"
    assert [r.name for r in rules] == [
        "High Consideration",
        "High Intent",
        "Disinterested",
        "Price Sensitive",
        "Bounce Risk",
        "Standard",
    ]


@pytest.mark.parametrize(
    ("doc", "where", "problem"),
    [
        (_scoring_with(mobile=None), "signals", "add up to 0.95"),
        (
            _scoring_with(dwell={"feature": "dwel_seconds"}),
            "signal 'dwell'",
            "unknown feature 'dwel_seconds'",
        ),
        (_scoring_with(dwell={"transform": "log"}), "signal 'dwell'", "transform 'log' is not one of"),
        (_scoring_with(dwell={"cap": 0}), "signal 'dwell'", "positive number 'cap'"),
        (_scoring_with(dwell={"weight": "high"}), "signal 'dwell'", "weight 'high' must be a number"),
        (_scoring_with(mobile={"transform": "indicator"}), "signal 'mobile'", "needs a numeric feature"),
        (_scoring_with(dwell={"colour": "red"}), "signal 'dwell'", "unknown keys ['colour']"),
        ({"signals": {}}, "model_version", "non-empty"),
    ],
)
def test_bad_scoring_config_names_the_signal_and_the_problem(tmp_path, doc, where, problem):
    path = _write(tmp_path, "scoring.yaml", doc)
    with pytest.raises(InvalidConfigError) as caught:
        load_scoring(path)
    assert caught.value.path == path and caught.value.where == where
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def _segments(*rules) -> dict:
    return {"segments": [dict(r) for r in rules]}


CATCH_ALL = {"name": "Standard", "when": "true"}


@pytest.mark.parametrize(
    ("doc", "where", "problem"),
    [
        (
            _segments({"name": "Hot", "when": "intent_scor > 50"}, CATCH_ALL),
            "rule 'Hot'",
            "unknown feature(s) ['intent_scor']",
        ),
        (
            _segments({"name": "Hot", "when": "reflect('java.lang.Runtime', 'x')"}, CATCH_ALL),
            "rule 'Hot'",
            "reflect() is not allowed",
        ),
        (_segments({"name": "Hot", "when": "intent_score > 50"}), "rule 'Hot'", "catch-all"),
        (
            _segments({"name": "Hot", "when": "true"}, {"name": "Hot", "when": "true"}),
            "rule 'Hot'",
            "defined twice",
        ),
        (_segments({"name": "Hot"}, CATCH_ALL), "rule 'Hot'", "needs a 'when'"),
        (_segments({"when": "true"}), "rule #1", "non-empty name"),
        ({"segments": []}, "segments", "non-empty list"),
        ("segments:\n  - name: [unclosed\n", "line 3", "not valid YAML"),
    ],
)
def test_bad_segment_rules_name_the_rule_and_the_problem(tmp_path, doc, where, problem):
    path = _write(tmp_path, "segments.yaml", doc)
    with pytest.raises(InvalidConfigError) as caught:
        load_segments(path)
    assert caught.value.where.startswith(where)
    assert problem in caught.value.problem


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(InvalidConfigError, match="does not exist"):
        load_scoring(tmp_path / "nope.yaml")


def test_referenced_names_skip_literals_functions_and_sql_words():
    expr = "intent_score >= 60 AND lower(device_type) = 'mobile phone' OR page_depth IS NOT NULL"
    assert referenced_names(expr) == {"intent_score", "device_type", "page_depth"}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("window_days: 0\nmin_person_sessions: 3\n", "window_days"),
        ("window_days: 28\nmin_person_sessions: two\n", "min_person_sessions"),
        ("window_days: 28\nmin_person_sessions: 3\nwindow: 5\n", "window"),
        ("- 28\n", "file"),
    ],
)
def test_a_bad_send_times_config_names_the_key(tmp_path, text, where):
    from spark_jobs.gold.rhythm import load_rhythm_config

    path = tmp_path / "send_times.yaml"
    path.write_text(text)
    with pytest.raises(InvalidConfigError) as caught:
        load_rhythm_config(path)
    assert caught.value.where == where


def test_shipped_send_times_config_loads():
    from spark_jobs.gold.rhythm import load_rhythm_config

    cfg = load_rhythm_config(REPO_ROOT / "config" / "send_times.yaml")
    assert (cfg.window_days, cfg.min_person_sessions) == (28, 3)


MODELS = REPO_ROOT / "config" / "models.yaml"


def test_shipped_models_config_loads():
    from spark_jobs.config import load_models

    cfg = load_models(MODELS)
    assert cfg.label == "converted" and cfg.holdout_days < cfg.window_days
    assert {f.column for f in cfg.features}.isdisjoint({"converted", "checkout_started", "session_phase"})


@pytest.mark.parametrize(
    ("edit", "where", "problem"),
    [
        (lambda d: d["learned"]["features"].append({"column": "checkout_started", "transform": "indicator"}),
         "learned feature 'checkout_started'", "set by the purchase itself"),
        (lambda d: d["learned"]["features"].append({"column": "dwel_seconds", "transform": "log1p"}),
         "learned feature 'dwel_seconds'", "unknown feature"),
        (lambda d: d["learned"]["features"].append({"column": "traffic_source", "transform": "value"}),
         "learned feature 'traffic_source'", "needs a numeric column"),
        (lambda d: d["learned"]["features"].append({"column": "cart_adds", "transform": "square"}),
         "learned feature 'cart_adds'", "transform 'square' is not one of"),
        (lambda d: d["learned"].update(algorithm="xgboost"), "learned: algorithm", "not supported"),
        (lambda d: d["training"].update(holdout_days=28), "training: holdout_days", "leaves no training days"),
        (lambda d: d["promotion"].update(margin=-0.1), "promotion: margin", "between 0 and 1"),
        (lambda d: d["training"].update(windows=3), "training: windows", "unknown key"),
    ],
)  # fmt: skip
def test_bad_models_config_names_the_place_and_the_problem(tmp_path, edit, where, problem):
    from spark_jobs.config import load_models

    doc = yaml.safe_load(MODELS.read_text())
    edit(doc)
    path = _write(tmp_path, "models.yaml", doc)
    with pytest.raises(InvalidConfigError) as caught:
        load_models(path)
    assert f"{where}:" in str(caught.value) and problem in str(caught.value)
