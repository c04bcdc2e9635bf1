"""What every streaming job shares: triggers, checkpoint identity, idempotent writes, run records."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery

from spark_jobs.contracts import table_contract
from spark_jobs.locks import batch_lock
from spark_jobs.settings import Settings, SettingsError

_INTERVAL = re.compile(r"^\d+\s+(second|minute|hour)s?$")


def apply_trigger(writer: DataStreamWriter, trigger: str) -> DataStreamWriter:
    """'availableNow' catches up on everything available, then stops; '30 seconds' runs until stopped."""
    if trigger == "availableNow":
        return writer.trigger(availableNow=True)
    if _INTERVAL.match(trigger.strip()):
        return writer.trigger(processingTime=trigger.strip())
    raise SettingsError(f"trigger {trigger!r}: use 'availableNow' or an interval such as '30 seconds'")


def checkpoint_query_id(checkpoint: Path) -> str:
    """The streaming query id stored in a checkpoint: stable across restarts, new for a new checkpoint."""
    metadata = checkpoint / "metadata"
    return json.loads(metadata.read_text().splitlines()[0])["id"]


def idempotent_append(df: DataFrame, table_path: Path, app_id: str, version: int) -> None:
    """Append once per (app_id, version): Delta skips a replayed micro-batch that already committed."""
    (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", version)
        .save(str(table_path))
    )


@dataclass
class BatchRecord:
    """One row of ops.pipeline_runs."""

    job: str
    query_id: str
    batch_id: int
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    input_rows: int = 0
    accepted_rows: int = 0
    quarantined_rows: int = 0
    duplicate_rows: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)
    late_rows: int | None = None
    watermark: datetime | None = None
    max_event_time: datetime | None = None
    source_offsets: dict[str, str] | None = None
    quality_status: str | None = None
    quality_failures: dict[str, list[str]] | None = None
    part: str = ""  # a part of a batch split to set aside what it cannot process (spark_jobs/set_aside.py)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the batch into details['<name>_ms'] (what an operator reads to find the cost)."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.details[f"{name}_ms"] = str(int((time.monotonic() - t0) * 1000))

    def write(self, spark: SparkSession, settings: Settings, app_suffix: str = "") -> None:
        """Append this record once (replays of the same batch are skipped by Delta).

        A batch that stops the stream (a halting quality gate) writes under its own suffix, so the record
        of its later successful replay is not mistaken for a replay of the failure.
        """
        row = {
            "job": self.job,
            "query_id": self.query_id,
            "batch_id": self.batch_id,
            "started_at": self.started_at,
            "duration_ms": int((time.monotonic() - self._t0) * 1000),
            "input_rows": self.input_rows,
            "accepted_rows": self.accepted_rows,
            "quarantined_rows": self.quarantined_rows,
            "duplicate_rows": self.duplicate_rows,
            "quarantine_reasons": self.quarantine_reasons,
            "details": {k: str(v) for k, v in self.details.items()} | ({"part": self.part} if self.part else {}),
            "run_date": self.started_at.date(),
            "late_rows": self.late_rows,
            "watermark": self.watermark,
            "max_event_time": self.max_event_time,
            "source_offsets": self.source_offsets,
            "quality_status": self.quality_status,
            "quality_failures": self.quality_failures,
        }
        df = spark.createDataFrame([row], table_contract("ops.pipeline_runs").schema())
        app_id = f"{self.job}-{self.query_id}" + (f"-part-{self.part}" if self.part else "")
        app_id += f"-{app_suffix}" if app_suffix else ""
        idempotent_append(df, settings.table_path("ops.pipeline_runs"), app_id, self.batch_id)


CHECKPOINT_MARKER = "intentlake.json"  # beside Spark's own files in the checkpoint folder


class CheckpointSettingsChanged(SettingsError):
    """A setting that gives an existing checkpoint its meaning differs from the one it was built with."""


def pin_checkpoint_settings(checkpoint: Path, pinned: dict[str, str]) -> None:
    """Record the settings that give a checkpoint its meaning; refuse to resume it when one has changed.

    What the checkpoint's offsets and the tables' open state mean depends on them: the landing folder or
    Kafka topic its offsets point into, bronze's dedup window (its watermark), silver's session timeout,
    maximum length and allowed lateness (which sessions are still open and may grow). Resuming after a
    change would mix two meanings in one table, silently. A checkpoint made before these were recorded
    adopts the current values. (Shuffle partitions are not pinned: no job keeps streaming state in the
    checkpoint, all state lives in Delta tables, so a new partition count changes no result.)
    """
    marker = checkpoint / CHECKPOINT_MARKER
    data = json.loads(marker.read_text()) if marker.exists() else {}
    recorded: dict[str, str] = data.get("settings", {})
    changed = {name: (recorded[name], value) for name, value in pinned.items() if recorded.get(name, value) != value}
    if changed:
        lines = [
            f"INTENTLAKE_{name.upper()} was {before!r} when checkpoint {checkpoint} was made, and is now {after!r}"
            for name, (before, after) in sorted(changed.items())
        ]
        raise CheckpointSettingsChanged(
            "; ".join(lines)
            + ". Resuming would mix two meanings of the same stream in its tables. Either set "
            + " and ".join(f"INTENTLAKE_{name.upper()}={before!r}" for name, (before, _) in sorted(changed.items()))
            + f" again, or move {checkpoint} aside to start a new checkpoint (the job then reads its source from "
            "the start; what its tables already hold is deduplicated or rewritten, not doubled)."
        )
    if any(name not in recorded for name in pinned):
        data["settings"] = {**recorded, **pinned}
        checkpoint.mkdir(parents=True, exist_ok=True)
        temporary = marker.with_name(f".{marker.name}.tmp")
        temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        temporary.replace(marker)


def run_stream(
    source: DataFrame,
    name: str,
    settings: Settings,
    process_batch: Callable[[DataFrame, int, str], None],
    trigger: str | None = None,
    wait: bool = True,
    pinned: dict[str, str] | None = None,
) -> StreamingQuery:
    """Start `source` -> foreachBatch(process_batch(batch, batch_id, query_id)) with the job's checkpoint.

    `pinned`: the settings that give the checkpoint its meaning (pin_checkpoint_settings), checked before
    the stream starts. With an availableNow trigger and wait=True this returns once everything available
    is processed.
    """
    checkpoint = settings.checkpoint(name)
    pin_checkpoint_settings(checkpoint, pinned or {})
    query_id: dict[str, str] = {}

    def batch(df: DataFrame, batch_id: int) -> None:
        if "id" not in query_id:
            query_id["id"] = checkpoint_query_id(checkpoint)
        # shared with other batches; erasure and maintenance wait for it and hold it alone (spark_jobs/locks.py)
        with batch_lock(settings.lock_dir, settings.lock_timeout_seconds, f"{name} batch {batch_id}"):
            process_batch(df, batch_id, query_id["id"])

    writer = source.writeStream.queryName(name).option("checkpointLocation", str(checkpoint)).foreachBatch(batch)
    query = apply_trigger(writer, trigger or "availableNow").start()
    if wait:
        query.awaitTermination()
    return query
