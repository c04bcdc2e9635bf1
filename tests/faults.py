"""Helpers for fault tests: run a job in its own process and kill -9 it in the middle of a batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from spark_jobs.settings import Settings


def start_job(settings: Settings, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`intentlake <args>` in a new process group (so the JVM it starts can be killed with it)."""
    env = {
        **os.environ,
        "INTENTLAKE_LAKEHOUSE": str(settings.lakehouse),
        "INTENTLAKE_SHUFFLE_PARTITIONS": str(settings.shuffle_partitions),
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "spark_jobs.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _batch_in_flight(checkpoint: Path) -> int | None:
    """The id of a batch whose offsets are written but not committed, after at least one committed batch."""
    offsets = {int(p.name) for p in (checkpoint / "offsets").glob("[0-9]*")}
    commits = {int(p.name) for p in (checkpoint / "commits").glob("[0-9]*")}
    pending = offsets - commits
    return min(pending) if commits and pending else None


def delta_versions(table: Path) -> int:
    """The commits in a Delta table's log (0 when the table does not exist yet)."""
    return len(list((table / "_delta_log").glob("*.json")))


def kill_mid_batch(
    process: subprocess.Popen, checkpoint: Path, timeout_s: float = 300, after_write_to: Path | None = None
) -> int:
    """Wait until a micro-batch is in flight, then SIGKILL the whole process group; return the batch id.

    after_write_to: a Delta table the batch writes; the kill then waits until the in-flight batch has
    committed a write to it, so the batch dies half done (that table written, the stream's commit not).
    """
    deadline = time.monotonic() + timeout_s
    versions_at_start: dict[int, int] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the job exited (code {process.returncode}) before a batch was in flight")
        batch = _batch_in_flight(checkpoint)
        if batch is not None and after_write_to is not None:
            versions = delta_versions(after_write_to)
            if versions <= versions_at_start.setdefault(batch, versions):
                batch = None  # in flight, but it has not written the table yet
        if batch is not None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return batch
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise TimeoutError(f"no batch was in flight within {timeout_s}s")


def kill_after_commit(process: subprocess.Popen, table: Path, versions_before: int, timeout_s: float = 600) -> None:
    """SIGKILL the job's process group as soon as `table` has a commit more than `versions_before`: the job
    dies right after that Delta commit, before whatever it would have done next."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if delta_versions(table) > versions_before:
            if process.poll() is not None:
                raise RuntimeError(f"the job finished right after committing to {table}: no kill landed")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return
        if process.poll() is not None:
            raise RuntimeError(f"the job exited (code {process.returncode}) before it committed to {table}")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    raise TimeoutError(f"no commit to {table} within {timeout_s}s")
