"""Run one DAG with Airflow's `dag.test()` in this process and print each task's state as JSON.

    [DAG_RUNNER_SKIP=PATTERN] python -m tests.dag_runner DAG_ID [LOGICAL_DATE]

DAG_RUNNER_SKIP (a regex of task ids) marks those tasks successful without running them (dag.test's
mark_success_pattern), for a test about one task of a wide DAG.

Tests call `run_dag`, which starts this in a subprocess so Airflow reads the AIRFLOW_HOME and INTENTLAKE_*
environment it is given (Airflow loads its configuration once per process). `run_dag_killed` kills such a run
with SIGKILL mid-task and `retry_dag` runs the DAG again as Airflow retries a killed task.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
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


def commits(table: Path) -> int:
    """How many commits a Delta table's log holds (0 before it exists)."""
    return len(list((table / "_delta_log").glob("[0-9]*.json")))


def new_commit(*tables: Path) -> Callable[[], bool]:
    """A kill point: true once one of these Delta tables has a commit it did not have when this was called."""
    before = sum(commits(t) for t in tables)
    return lambda: sum(commits(t) for t in tables) > before


def task_states(env: dict[str, str], dag_id: str) -> dict[str, str]:
    """Each task's state in the DAG's latest run, as Airflow's metadata database holds it (a mapped task: its
    instances' states joined by commas)."""
    with sqlite3.connect(Path(env["AIRFLOW_HOME"]) / "airflow.db") as db:
        rows = db.execute(
            "SELECT ti.task_id, ti.map_index, ti.state FROM task_instance ti JOIN dag_run dr"
            " ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id"
            " WHERE dr.id = (SELECT max(id) FROM dag_run WHERE dag_id = ?) ORDER BY ti.task_id, ti.map_index",
            (dag_id,),
        ).fetchall()
    states: dict[str, list[str]] = {}
    for task_id, _, state in rows:
        states.setdefault(task_id, []).append(str(state))
    return {task_id: ",".join(s) for task_id, s in states.items()}


def run_dag_killed(
    env: dict[str, str], dag_id: str, logical_date: str, when: Callable[[], bool], timeout_s: float = 900
) -> dict[str, str]:
    """dag.test() in a subprocess of its own process group, killed with SIGKILL (Python, and the Spark JVM it
    started) as soon as `when()` holds. Returns the task states the kill left in Airflow's metadata database
    (the killed task still 'running', as after a worker lost mid-task). Fails if the run ends first."""
    out = Path(env["AIRFLOW_HOME"]) / f"killed_{dag_id}.log"
    with out.open("w") as log:
        command = [sys.executable, "-m", "tests.dag_runner", dag_id, logical_date]
        proc = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        deadline, polls = time.monotonic() + timeout_s, 0
        while proc.poll() is None and not when() and time.monotonic() < deadline:
            time.sleep(0.02)
            polls += 1
            if polls % 50 == 0 and "Task failed with exception" in out.read_text():
                break  # a task failed before the kill point (dag.test would wait out its retry delay)
        ended = proc.poll()
        if ended is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    failed = "Task failed with exception" in out.read_text()
    assert not failed and ended is None, f"{dag_id} failed or ended before the kill point:\n{out.read_text()[-5000:]}"
    assert time.monotonic() < deadline, f"{dag_id} never reached the kill point in {timeout_s:.0f} s"
    return task_states(env, dag_id)


def retry_dag(
    env: dict[str, str], dag_id: str, logical_date: str, killed: dict[str, str], rerun: tuple[str, ...] = ()
) -> tuple[dict, str]:
    """Run the DAG for the same logical date again as Airflow retries a killed try: the tasks that had succeeded
    stay done (marked success, not run), the killed task and every task after it run. dag.test() makes a new
    DAG run, so a succeeded task whose result (XCom) a task to be run reads is listed in `rerun`: it runs again
    to hand that result over (only tasks that write nothing belong there)."""
    done = [
        re.escape(task)
        for task, state in sorted(killed.items())
        if set(state.split(",")) == {"success"} and task not in rerun
    ]
    if env.get("DAG_RUNNER_SKIP"):  # tasks the killed run was told to skip stay skipped
        done.append(f"(?:{env['DAG_RUNNER_SKIP']})")
    return run_dag(env, dag_id, logical_date, skip="^(?:" + "|".join(done) + ")$" if done else None)


def killed_and_retried(
    env: dict[str, str], dag_id: str, logical_date: str, when: Callable[[], bool], rerun: tuple[str, ...] = ()
) -> dict[str, str]:
    """`run_dag_killed` then `retry_dag`, which must succeed; the task states the kill left."""
    killed = run_dag_killed(env, dag_id, logical_date, when)
    assert any("running" in state.split(",") for state in killed.values()), killed  # killed mid-task
    result, log = retry_dag(env, dag_id, logical_date, killed, rerun)
    assert result["state"] == "success", log[-3000:]
    return killed


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
