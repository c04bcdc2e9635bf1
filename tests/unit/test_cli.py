"""The command line without Spark: --help everywhere, and simulate writing what simulate() writes."""

from __future__ import annotations

import json
import os
import signal

import pytest

from spark_jobs.cli import build_parser, main, simulator_defaults, stopping_on_signals
from spark_jobs.simulate import simulate

pytestmark = pytest.mark.unit


COMMANDS = [
    "demo",
    "simulate",
    "run",
    "sql",
    "status",
    "replay-quarantine",
    "validate-config",
    "send-times",
    "evaluate",
    "train",
    "models",
    "content-picks",
    "serve",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("usage: intentlake")


def test_simulate_command_defaults_are_the_simulators_own():
    args = build_parser().parse_args(["simulate"])
    assert {name: getattr(args, name) for name in simulator_defaults()} == simulator_defaults()


def test_simulate_command_writes_the_same_day_as_the_library(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("INTENTLAKE_LAKEHOUSE", str(tmp_path / "cli"))
    assert main(["simulate", "--events", "300", "--seed", "4", "--malformed-rate", "0.05"]) == 0
    assert "simulated" in capsys.readouterr().out
    expected = simulate(tmp_path / "lib" / "landing", tmp_path / "lib" / "truth", events=300, seed=4,
                        malformed_rate=0.05)  # fmt: skip
    written = json.loads((tmp_path / "cli" / "_truth" / "summary.json").read_text())
    assert {k: v for k, v in written.items() if k not in ("landing", "truth")} == {
        k: v for k, v in json.loads((tmp_path / "lib" / "truth" / "summary.json").read_text()).items()
        if k not in ("landing", "truth")
    }  # fmt: skip
    assert written["malformed"] == expected.malformed > 0


def test_validate_config_checks_models_and_content_rules_too(capsys):
    assert main(["validate-config", "--no-spark"]) == 0
    out = capsys.readouterr().out
    assert "models.yaml (" in out and "content_rules.yaml (10 rules for email, crm; live: web, app; 1 places)" in out


def test_a_multi_day_simulation_spreads_sessions_over_the_days(tmp_path):
    import csv

    simulate(tmp_path / "landing", tmp_path / "truth", events=600, seed=5, days=3)
    with open(tmp_path / "truth" / "sessions.csv") as fh:
        local_days = {row["start"][:10] for row in csv.DictReader(fh)}
    assert {"2026-11-02", "2026-11-03", "2026-11-04"} <= local_days  # UTC days: the world's evenings may spill


def test_run_all_with_a_malformed_interval_names_it_before_spark_starts(capsys):
    assert main(["run", "all", "--trigger", "5 sekunds"]) == 2
    assert "--trigger='5 sekunds'" in capsys.readouterr().err


def test_a_signal_asks_a_following_run_to_stop_and_the_handlers_are_restored_after(capsys):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stopping_on_signals() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop()
        with pytest.raises(KeyboardInterrupt):  # a second signal does not wait for the step
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert "SIGTERM: stopping after the step in progress" in capsys.readouterr().err


def test_run_all_takes_its_interval_from_intentlake_trigger_too(monkeypatch, capsys):
    monkeypatch.setenv("INTENTLAKE_TRIGGER", "a while")  # an interval: run all follows, so it is checked first
    assert main(["run", "all"]) == 2
    assert "INTENTLAKE_TRIGGER='a while'" in capsys.readouterr().err


def test_a_following_run_prints_no_line_for_a_cycle_where_nothing_landed():
    from spark_jobs.cli import _idle_bronze
    from spark_jobs.operations import LayerRun

    assert _idle_bronze(LayerRun("bronze", 1.2, {"bronze.events": [7, 7], "bronze.quarantine": [3, 3]}))
    assert not _idle_bronze(LayerRun("bronze", 1.2, {"bronze.events": [7, 7], "bronze.quarantine": [3, 4]}))
    assert not _idle_bronze(LayerRun("silver", 1.2, {"silver.sessions": [5, 5]}))


def test_status_says_where_the_services_are_and_how_far_the_online_store_is(capsys):
    import socket
    from dataclasses import replace

    from spark_jobs.cli import _print_online_status
    from spark_jobs.operations import service_status
    from spark_jobs.settings import Settings

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    settings = replace(Settings.from_env(), collector_port=free, api_port=free)
    found = service_status(settings)
    assert found["collector"].startswith(f"not answering at http://127.0.0.1:{free}")
    assert "intentlake serve api" in found["decision API"]
    _print_online_status(None)
    _print_online_status({"error": "ConnectionError: refused"})
    _print_online_status({"persons": 1234, "sources": {
        "gold.user_segments": {"version": "7", "applied_at": "2026-12-05T10:00:00+00:00", "table_version": 9},
        "silver.profiles": {"version": "3", "table_version": 3}}})  # fmt: skip
    out = capsys.readouterr().out
    assert "online store: not configured (INTENTLAKE_REDIS_URL" in out and "does not answer (ConnectionError" in out
    assert "1,234 persons" in out and "(behind: the next run applies it)" in out.splitlines()[-2]
    assert "behind" not in out.splitlines()[-1]
