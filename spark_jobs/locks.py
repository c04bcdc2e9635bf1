"""The lakehouse lock: stream batches share it; erasure and table maintenance take it alone.

A micro-batch of any job holds the lock *shared* while it reads and writes the tables, so bronze, silver
and gold batches run side by side. Erasure, OPTIMIZE and VACUUM hold it *exclusively*: they wait until no
batch is in flight, and no batch starts until they are done. So an erasure never interleaves with a batch
that read the person's rows before the DELETE and writes them back after it, and a compaction never
races a streaming MERGE into a conflict that would stop the stream.

It is an advisory `flock` on `<lock_dir>/lakehouse.lock` (INTENTLAKE_LOCK_DIR, default `<lakehouse>/_locks`):
every process on one machine, or on machines sharing that folder over a file system that honours flock
(NFSv4, a local cluster disk), sees it. On object storage with jobs on several machines, point
INTENTLAKE_LOCK_DIR at such a shared folder, or run the writers from one Airflow pool. Waits are bounded:
a holder that does not let go within the timeout raises LockTimeout naming the lock and how long it waited.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = "lakehouse.lock"


class LockTimeout(TimeoutError):
    """The lakehouse lock could not be had in time; the message names the lock and the wait."""


@contextmanager
def _flock(path: Path, mode: int, timeout_s: float, purpose: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        warned = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout_s:
                    kind = "exclusive" if mode == fcntl.LOCK_EX else "shared"
                    raise LockTimeout(
                        f"{purpose}: no {kind} hold on {path} after {waited:.0f} s (another job holds it; "
                        "raise INTENTLAKE_LOCK_TIMEOUT_SECONDS or look for a stuck process)"
                    ) from None
                if not warned and waited >= 5:
                    log.info("%s: waiting for the lakehouse lock %s", purpose, path)
                    warned = True
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def lock_path(lock_dir: Path) -> Path:
    return lock_dir / LOCK_FILE


@contextmanager
def batch_lock(lock_dir: Path, timeout_s: float, purpose: str) -> Iterator[None]:
    """Held (shared) by a micro-batch while it reads and writes tables."""
    with _flock(lock_path(lock_dir), fcntl.LOCK_SH, timeout_s, purpose):
        yield


@contextmanager
def exclusive_lock(lock_dir: Path, timeout_s: float, purpose: str) -> Iterator[None]:
    """Held alone by erasure and table maintenance: no batch runs meanwhile."""
    with _flock(lock_path(lock_dir), fcntl.LOCK_EX, timeout_s, purpose):
        yield
