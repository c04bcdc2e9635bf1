"""The Airflow DAGs: they parse without Spark and are documented; lakehouse_pipeline runs end to end with
`dag.test()`, and a failing quality gate stops the layers downstream, naming the expectation.

Airflow runs in a subprocess (tests/dag_runner.py) with its own AIRFLOW_HOME: it loads its configuration
once per process, and the DAG tasks build their Spark session from the INTENTLAKE_* environment.
"""

from __future__ import annotations

import json
import shutil

import pytest

from spark_jobs.settings import REPO_ROOT
from spark_jobs.simulate import simulate
from tests.dag_runner import airflow_env, migrate, run_dag, run_python
from tests.helpers import table

pytestmark = pytest.mark.integration


PARSE = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
dags = {d.dag_id: {"doc": bool(d.doc_md and len(d.doc_md) > 200), "tags": sorted(d.tags), "owner": d.owner,
                   "retries": min(t.retries for t in d.tasks), "tasks": len(d.tasks)} for d in bag.dags.values()}
print(json.dumps({"errors": bag.import_errors, "dags": dags, "spark": "pyspark" in sys.modules,
                  "parse_seconds": sum(s.duration.total_seconds() for s in bag.dagbag_stats)}))
"""


def test_the_dags_parse_without_spark_and_are_documented(tmp_path, settings):
    done = run_python(airflow_env(tmp_path / "airflow", settings.lakehouse), "-c", PARSE)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"dags folder parsed in {report['parse_seconds']:.2f} s (Airflow's own per-file timings)")
    assert report["errors"] == {}
    assert not report["spark"]  # no DAG file imports Spark at parse time
    assert set(report["dags"]) == {"lakehouse_pipeline", "retrain_intent_model", "lakehouse_maintenance"}
    for dag_id, dag in report["dags"].items():
        assert dag["doc"], f"{dag_id} has no Markdown doc"
        assert "intentlake" in dag["tags"] and dag["owner"] == "data-platform", dag_id
        assert dag["retries"] >= 1, dag_id


def test_a_failing_gate_stops_downstream_and_a_fixed_suite_lets_the_run_through(spark, tmp_path, settings):
    simulate(settings.landing, settings.truth, events=600, seed=3, lines_per_file=300)
    strict = tmp_path / "strict"
    shutil.copytree(REPO_ROOT / "expectations", strict)
    suite = json.loads((strict / "silver_identity_map.json").read_text())
    for item in suite["expectations"]:
        if item["kwargs"].get("column") == "identifier_type":
            item["kwargs"]["value_set"] = ["anonymous_id"]  # logins now fail the suite
    (strict / "silver_identity_map.json").write_text(json.dumps(suite))
    env = airflow_env(tmp_path / "airflow", settings.lakehouse, strict)
    migrate(env)

    result, log = run_dag(env, "lakehouse_pipeline")
    assert result["state"] == "failed"
    assert result["tasks"] == {
        "bronze": "success", "gate_bronze": "success", "silver": "success", "gate_silver": "failed",
        "gold": "upstream_failed", "gate_gold": "upstream_failed",
    }  # fmt: skip
    assert "silver quality gate failed" in log
    assert "silver.identity_map: expect_column_values_to_be_in_set(identifier_type) failed for" in log
    assert table(spark, settings, "gold.session_scores").count() == 0

    # the suite fixed: the next run re-checks the same rows (the gate's mark did not move) and goes through
    result, _ = run_dag(airflow_env(tmp_path / "airflow", settings.lakehouse), "lakehouse_pipeline")
    assert result["state"] == "success", result
    sessions = table(spark, settings, "silver.sessions").count()
    assert sessions > 0 and table(spark, settings, "gold.session_scores").count() == sessions
    marks = {r.table_name: r for r in table(spark, settings, "ops.quality_gates").collect()}
    assert marks["silver.identity_map"].checked_rows == table(spark, settings, "silver.identity_map").count()
    assert {"bronze.events", "silver.sessions", "gold.session_scores", "gold.user_segments"} <= marks.keys()
