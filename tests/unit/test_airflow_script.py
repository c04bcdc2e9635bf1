"""`make airflow` on any port: every URL and port Airflow uses derives from AIRFLOW_PORT (no Airflow started)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "airflow.sh"


def run_script(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/airflow.sh with a clean Airflow environment; kill its whole group if it outlives 60 s."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    clean.update(AIRFLOW_HOME=str(tmp_path / "airflow"), **env)
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), *args],
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def print_config(tmp_path: Path, **env: str) -> dict[str, str]:
    result = run_script(tmp_path, "--print-config", **env)
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_tasks_reach_the_execution_api_on_the_chosen_port(tmp_path):
    config = print_config(tmp_path, AIRFLOW_PORT="8793")

    assert config["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert config["AIRFLOW__API__PORT"] == "8793"
    assert config["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8793/"
    assert config["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8793/execution/"
    # Airflow's default task log server port is 8793: it moves out of the way, with the triggerer's.
    assert config["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "8794"
    assert config["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "8795"
    assert config["AIRFLOW_HOME"] == str(tmp_path / "airflow")


def test_default_port_is_8080_everywhere(tmp_path):
    config = print_config(tmp_path)

    assert config["AIRFLOW__API__PORT"] == "8080"
    assert config["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8080/"
    assert config["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"


def test_tasks_connect_to_loopback_when_the_server_binds_every_address(tmp_path):
    config = print_config(tmp_path, AIRFLOW_HOST="0.0.0.0", AIRFLOW_PORT="9000")

    assert config["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert config["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:9000/execution/"


def test_a_port_that_is_not_a_number_is_refused(tmp_path):
    result = run_script(tmp_path, "--print-config", AIRFLOW_PORT="80a")

    assert result.returncode == 2
    assert "AIRFLOW_PORT=80a is not a port" in result.stderr


def test_a_port_in_use_is_named_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_script(tmp_path, AIRFLOW_PORT=str(port - 1 if port > 1 else port))

    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert not (tmp_path / "airflow").exists()  # no database migrated, nothing started
