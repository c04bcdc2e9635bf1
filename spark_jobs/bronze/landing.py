"""Which landing-zone files bronze reads, and the other files it reports instead of ignoring them silently.

Bronze reads the files directly in the landing folder whose names end in one of LANDING_SUFFIXES:
newline-delimited JSON, one event per line, plain or gzip-compressed (Spark's text source decompresses
`.gz` through Hadoop's codecs). Any other visible file there, or in a subfolder (Spark's file source does
not descend into plain subfolders), is never read: `unread_files` lists them for `intentlake status`, and
`warn_unread_files` logs each of them once when bronze starts.

Hidden names are skipped as Spark skips them: a name starting with `.` or `_` (files being written and
then renamed, Spark's and Hadoop's own metadata) or ending in `._COPYING_` (`hadoop fs -put` in progress).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

LANDING_SUFFIXES = (".ndjson", ".jsonl", ".json", ".ndjson.gz", ".jsonl.gz", ".json.gz")
# Spark's pathGlobFilter (a Hadoop glob, matched against file names only, case-sensitive)
LANDING_GLOB = "*.{" + ",".join(suffix.removeprefix(".") for suffix in LANDING_SUFFIXES) + "}"

log = logging.getLogger(__name__)

_warned: set[tuple[Path, Path]] = set()  # (landing folder, file relative to it) already logged by this process
_warned_lock = threading.Lock()


def is_hidden(name: str) -> bool:
    """Whether Spark's file source skips this file or folder name (in-progress, temporary or metadata)."""
    return (name.startswith("_") and "=" not in name) or name.startswith(".") or name.endswith("._COPYING_")


def is_landing_file(name: str) -> bool:
    """Whether bronze reads a file of this name when it lies directly in the landing folder."""
    return not is_hidden(name) and name.endswith(LANDING_SUFFIXES)


def _visible_files(folder: Path, relative: Path) -> Iterator[Path]:
    for entry in folder.iterdir():
        if is_hidden(entry.name):
            continue
        if entry.is_dir():
            yield from _visible_files(entry, relative / entry.name)
        elif entry.is_file():
            yield relative / entry.name


def unread_files(landing: Path) -> list[Path]:
    """The files in the landing zone that bronze will never read, as sorted paths relative to `landing`.

    Pass `settings.landing`. A file is unread when its name does not end in one of LANDING_SUFFIXES
    (`events.csv`, `data.parquet`, `EVENTS.JSON`) or when it lies in a subfolder (`2026-12/events.ndjson`).
    Hidden files and folders (see `is_hidden`) are not listed. A missing landing folder has none.
    Pure file-system listing: no Spark, safe to call from the CLI.
    """
    if not landing.is_dir():
        return []
    return sorted(p for p in _visible_files(landing, Path()) if len(p.parts) > 1 or not is_landing_file(p.name))


def warn_unread_files(landing: Path) -> list[Path]:
    """Log a warning for each unread file (see `unread_files`) not yet reported; return the ones just logged.

    Each file is logged once per process and landing folder: bronze calls this whenever it starts its
    stream, so a second run in the same process (a test, `intentlake run all`, an embedding service)
    stays quiet about a file it already named. The record is a set in this module rather than a marker
    file in the landing zone: bronze needs only read access to the landing zone, and a new process (the
    next `intentlake run bronze`, the next Airflow task) reminds whoever starts it that the file still sits
    there unread. `intentlake status` lists the unread files at any time.
    """
    accepted = ", ".join(LANDING_SUFFIXES)
    new = []
    with _warned_lock:
        for relative in unread_files(landing):
            key = (landing.resolve(), relative)
            if key in _warned:
                continue
            _warned.add(key)
            new.append(relative)
    for relative in new:
        why = "it is in a subfolder" if len(relative.parts) > 1 else "its name does not end in an accepted suffix"
        log.warning(
            "landing file %s is not read by bronze: %s. Bronze reads only files directly in %s whose names end "
            "in %s (newline-delimited JSON, one event per line, optionally gzip-compressed). If it holds events, "
            "write them in that form under such a name.",
            landing / relative,
            why,
            landing,
            accepted,
        )
    return new
