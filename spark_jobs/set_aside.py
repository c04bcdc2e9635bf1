"""Set aside what a streaming job cannot process, and keep going: no valid input ever stops a stream.

A silver or gold micro-batch that fails on its data (an error Spark raises while evaluating rows: a cast
that cannot be made, a NOT NULL or CHECK constraint, a Python UDF that raises) is split by its key
(silver: the device, `anonymous_id`; gold: the person, `person_id`) into hash buckets, and each part is
processed as a batch of its own. A part that fails is split again, until the part that still fails holds
a single key: that key's rows are recorded in ops.set_aside (key, row count, bronze event ids, the error's
class; never its message, which can quote the values) and left out of this batch. Every other part lands.

Processing a part is the job's own batch function, which is idempotent by design (the kill -9 tests
prove it): a part after a failed whole batch is a replay of the parts the failed attempt may have
written. Each part writes its own ops.pipeline_runs record (details['part']), so the run history sums
to the batch.

What is not data stops the job as before: an error of another kind (an AnalysisException is a bug, a
QualityGateHalted is the policy, a lost executor is the cluster), or a data-looking error that fails
every single key of a batch with more than one key (then the fault is not in the rows).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions import captured
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.contracts import table_contract
from spark_jobs.settings import Settings
from spark_jobs.streaming import idempotent_append

log = logging.getLogger(__name__)

# Exceptions Spark raises when the rows themselves cannot be evaluated (not the query, not the cluster)
_DATA_EXCEPTIONS = (
    captured.ArithmeticException,
    captured.ArrayIndexOutOfBoundsException,
    captured.DateTimeException,
    captured.NumberFormatException,
    captured.PythonException,
    captured.SparkRuntimeException,
)
# Conditions that name a row-level failure whatever exception carries them (Delta's constraint checks
# reach Python as a bare Py4JJavaError)
_DATA_CONDITIONS = frozenset(
    {
        "CAST_INVALID_INPUT",
        "CAST_OVERFLOW",
        "DIVIDE_BY_ZERO",
        "ARITHMETIC_OVERFLOW",
        "INVALID_ARRAY_INDEX",
        "DATETIME_FIELD_OUT_OF_BOUNDS",
        "USER_RAISED_EXCEPTION",
        "DELTA_NOT_NULL_CONSTRAINT_VIOLATED",
        "DELTA_VIOLATE_CONSTRAINT_WITH_VALUES",
        "DELTA_CONSTRAINT_DATA_TYPE_MISMATCH",
        "DELTA_NULL_SCHEMA_IN_STREAMING_WRITE",
    }
)
_CONDITION = re.compile(r"\[([A-Z][A-Z0-9_]+)(?:\.[A-Z0-9_]+)?\]")
_DATA_TYPE_NAMES = (  # as the exceptions above appear in a Java stack trace's text
    "PythonException",
    "SparkRuntimeException",
    "SparkArithmeticException",
    "ArithmeticException",
    "SparkNumberFormatException",
    "NumberFormatException",
    "SparkDateTimeException",
    "DateTimeException",
    "SparkArrayIndexOutOfBoundsException",
    "ArrayIndexOutOfBoundsException",
    "DeltaInvariantViolationException",
)
_MULTIPLE = "STAGE_MATERIALIZATION_MULTIPLE_FAILURES"
MAX_DEPTH = 16  # 65,536 buckets: a part at this depth that still fails is set aside whole
MAX_PARTS = 256  # parts processed before the job gives up on splitting and stops with the error


def _failure_class(text: str) -> str | None:
    """The data error a failure's text names (a data condition, else a data exception's type), or None."""
    for condition in _CONDITION.findall(text):
        if condition in _DATA_CONDITIONS:
            return condition
    for name in _DATA_TYPE_NAMES:
        if re.search(rf"\b{name}\b", text):
            return name
    return None


def _classify(exc: BaseException) -> tuple[bool, str]:
    """(is it a data error, its class). Adaptive execution reports tasks that failed together as one
    STAGE_MATERIALIZATION_MULTIPLE_FAILURES listing each failure: data when every one of them is."""
    condition = getattr(exc, "getCondition", lambda: None)()
    text = str(exc.java_exception.toString()) if isinstance(exc, Py4JJavaError) else str(exc)
    found = _CONDITION.findall(text)
    condition = condition or (found[0] if found else None)
    if condition == _MULTIPLE:
        failures = [_failure_class(part) for part in re.split(r"\n\s*\d+\.\s", text)[1:]]
        if failures and all(failures):
            return True, str(failures[0])
        return False, _MULTIPLE
    if isinstance(exc, _DATA_EXCEPTIONS):
        return True, condition or type(exc).__name__
    if condition is None and "Job aborted due to stage failure" in text:  # a task's error, wrapped
        failure = _failure_class(text)
        return failure is not None, failure or type(exc).__name__
    return condition in _DATA_CONDITIONS, condition or type(exc).__name__


def error_class(exc: BaseException) -> str:
    """The Spark error condition of `exc` (CAST_INVALID_INPUT, ...), else the exception's type name."""
    return _classify(exc)[1]


def is_data_error(exc: BaseException) -> bool:
    """True when `exc` is Spark failing on the rows it evaluated (see the module doc)."""
    if not isinstance(exc, (Py4JJavaError, captured.CapturedException)):
        return False
    return _classify(exc)[0]


@dataclass(frozen=True)
class _Failure:
    bucket: int
    depth: int
    keys: int  # distinct keys in the part (counted when it was split off; not recounted)
    error_class: str
    error_type: str


def _part(batch: DataFrame, key: str, bucket: int, depth: int) -> DataFrame:
    return batch.filter(F.pmod(F.xxhash64(F.col(key)), F.lit(1 << depth)) == F.lit(bucket))


def process_or_set_aside(
    spark: SparkSession,
    settings: Settings,
    job: str,
    key: str,
    batch: DataFrame,
    batch_id: int,
    query_id: str,
    process: Callable[[DataFrame, str], object],
) -> int:
    """Run `process(batch, part)` (part '' for the whole batch); on a data error, split and set aside as the
    module doc says. Returns the number of keys set aside (0 when the batch went through whole)."""
    try:
        process(batch, "")
        return 0
    except Exception as exc:  # classified right below, re-raised unless it is data
        if not is_data_error(exc):
            raise
        first = exc
        log.warning("%s batch %s failed on its data (%s): splitting it by %s", job, batch_id, error_class(exc), key)
    batch = batch.persist()
    try:
        keys = batch.select(key).distinct().count()
        if keys == 1:  # nothing to split: the one key is what fails
            failed = [_Failure(0, 0, 1, error_class(first), type(first).__name__)]
        else:
            failed = _split(batch, key, keys, process, first)
        if not failed:  # every part went through on its own (the whole batch failed on their sum)
            return 0
        return _record(spark, settings, job, key, batch, batch_id, query_id, failed)
    finally:
        batch.unpersist()


def _split(
    batch: DataFrame, key: str, keys_seen: int, process: Callable[[DataFrame, str], object], first: Exception
) -> list[_Failure]:
    todo = [(0, 0)]  # (bucket, depth): the whole batch failed, so split it
    failed: list[_Failure] = []
    parts_run = 0
    while todo:
        bucket, depth = todo.pop()
        for child in (bucket, bucket + (1 << depth)):
            part = _part(batch, key, child, depth + 1)
            keys = part.select(key).distinct().count()
            if keys == 0:
                continue
            parts_run += 1
            if parts_run > MAX_PARTS:
                raise RuntimeError(f"gave up splitting after {MAX_PARTS} parts; the first error follows") from first
            try:
                process(part, f"{depth + 1}:{child}")
            except Exception as exc:
                if not is_data_error(exc):
                    raise
                log.warning("part %s:%s (%d %ss) failed: %s", depth + 1, child, keys, key, error_class(exc))
                if keys > 1 and depth + 1 < MAX_DEPTH:
                    todo.append((child, depth + 1))
                else:
                    failed.append(_Failure(child, depth + 1, keys, error_class(exc), type(exc).__name__))
    failed_keys = sum(f.keys for f in failed)
    if failed_keys == keys_seen:
        raise RuntimeError(
            f"every one of the batch's {keys_seen} {key}s fails on its own: the fault is not in the data"
        ) from first
    return failed


def _record(
    spark: SparkSession,
    settings: Settings,
    job: str,
    key: str,
    batch: DataFrame,
    batch_id: int,
    query_id: str,
    failed: list[_Failure],
) -> int:
    now = datetime.now(UTC)
    has_events = "event_id" in batch.columns
    frames = []
    for failure in failed:
        rows = (
            _part(batch, key, failure.bucket, failure.depth)
            .groupBy(F.col(key).alias("key_value"))
            .agg(
                F.count(F.lit(1)).alias("input_rows"),
                (F.sort_array(F.collect_set("event_id")) if has_events else F.lit(None).cast("array<string>")).alias(
                    "event_ids"
                ),
            )
            .withColumn("error_class", F.lit(failure.error_class))
            .withColumn("error_type", F.lit(failure.error_type))
        )
        frames.append(rows)
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    rows = (
        rows.withColumn("job", F.lit(job))
        .withColumn("batch", F.lit(f"{query_id}/{batch_id}"))
        .withColumn("key_column", F.lit(key))
        .withColumn("set_aside_at", F.lit(now))
        .select(*table_contract("ops.set_aside").column_names)
    ).localCheckpoint(eager=True)
    count = rows.count()
    idempotent_append(rows, settings.table_path("ops.set_aside"), f"{job}-{query_id}", batch_id)
    log.warning(
        "%s batch %s: set aside %d %s(s) it cannot process (%s); see ops.set_aside",
        job,
        batch_id,
        count,
        key,
        ", ".join(sorted({f.error_class for f in failed})),
    )
    return count
