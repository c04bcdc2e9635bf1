"""spark_jobs.spark.alongside: independent parts of a batch at once, results in order, no error lost."""

from __future__ import annotations

import threading
import time

import pytest

from spark_jobs.spark import alongside

pytestmark = pytest.mark.unit


def test_the_calls_run_at_once_and_their_results_come_back_in_order():
    both = threading.Barrier(2, timeout=5)  # each waits for the other: run one after the other, it would time out

    def part(value: str) -> str:
        both.wait()
        return value

    assert alongside(lambda: part("identity"), lambda: part("sessions")) == ["identity", "sessions"]


def test_a_failing_part_waits_for_the_others_and_every_error_is_reported():
    finished = []

    def slow_write() -> None:
        time.sleep(0.3)
        finished.append("written")

    def refused() -> None:
        raise ValueError("DELTA_NOT_NULL_CONSTRAINT_VIOLATED")

    with pytest.raises(ValueError, match="NOT_NULL") as raised:
        alongside(refused, slow_write)
    assert finished == ["written"]  # nothing is left writing behind the failed batch

    def also_refused() -> None:
        time.sleep(0.1)
        raise KeyError("session_id")

    with pytest.raises(ValueError) as raised:
        alongside(refused, also_refused)
    assert raised.value.__notes__ == ["and beside it: KeyError: 'session_id'"]
    with pytest.raises(KeyError) as raised:
        alongside(lambda: "fine", also_refused, refused)
    assert raised.value.__notes__ == ["and beside it: ValueError: DELTA_NOT_NULL_CONSTRAINT_VIOLATED"]


def test_one_call_runs_in_the_callers_thread():
    assert alongside(threading.current_thread) == [threading.current_thread()]
