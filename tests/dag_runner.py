"""Run one DAG with Airflow's `dag.test()` in this process and print each task's state as JSON.

    [DAG_RUNNER_SKIP=PATTERN] python -m tests.dag_runner DAG_ID [LOGICAL_DATE]

DAG_RUNNER_SKIP (a regex of task ids) marks those tasks successful without running them (dag.test's
mark_success_pattern), for a test about one task of a wide DAG.

Tests call `run_dag`, which starts this in a subprocess so Airflow reads the AIRFLOW_HOME and INTENTLAKE_*
environment it is given (Airflow loads its configuration once per process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def airflow_env(home: Path, lakehouse: Path, expectations: Path | None = None) -> dict[str, str]:
    """The environment of an Airflow run on the repo's dags/ against one lakehouse."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "INTENTLAKE_LAKEHOUSE": str(lakehouse),
        "INTENTLAKE_SHUFFLE_PARTITIONS": "2",
        "INTENTLAKE_EXPECTATIONS_DIR": str(expectations or REPO_ROOT / "expectations"),
    })  # fmt: skip
    return env


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip


def migrate(env: dict[str, str]) -> None:
    """Create Airflow's metadata database (sqlite under AIRFLOW_HOME)."""
    done = run_python(env, "-m", "airflow", "db", "migrate")
    assert done.returncode == 0, done.stderr[-2000:]


def run_dag(
    env: dict[str, str], dag_id: str, logical_date: str | None = None, skip: str | None = None
) -> tuple[dict, str]:
    """dag.test() in a subprocess: ({"state": ..., "tasks": {task_id: state}}, the run's output)."""
    env = env | ({"DAG_RUNNER_SKIP": skip} if skip else {})
    done = run_python(env, "-m", "tests.dag_runner", dag_id, *([logical_date] if logical_date else []))
    result = next((line for line in done.stdout.splitlines() if line.startswith("DAG-RESULT ")), None)
    assert result, f"no result from dag.test():\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return json.loads(result.removeprefix("DAG-RESULT ")), done.stdout + done.stderr


def main() -> int:
    from airflow.dag_processing.dagbag import DagBag

    dag_id = sys.argv[1]
    logical = datetime.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else datetime(2026, 11, 3, tzinfo=UTC)
    bag = DagBag()
    if bag.import_errors:
        print(json.dumps({"import_errors": bag.import_errors}))
        return 3
    run = bag.dags[dag_id].test(logical_date=logical, mark_success_pattern=os.environ.get("DAG_RUNNER_SKIP"))
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print("DAG-RESULT " + json.dumps({"state": str(run.state), "tasks": states}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
