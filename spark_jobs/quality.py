"""Data quality gate: a Great Expectations suite from expectations/ validated on Spark DataFrames.

A suite file is GX's own suite JSON (name, expectations) plus two entries in its meta: `key`, the column
that identifies a row in reports (never the row's contents), and `columns`, the Spark SQL expressions
that project the table's rows onto the columns the expectations name (properties arrive as text, so a
range check needs a cast). Bronze validates each micro-batch's new rows before writing them.

GX runs with an ephemeral context: nothing is written to disk and nothing leaves the machine.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spark_jobs.settings import REPO_ROOT

EXPECTATIONS_DIR = REPO_ROOT / "expectations"
MAX_KEYS_REPORTED = 100  # per expectation, in ops.pipeline_runs


class QualitySuiteError(ValueError):
    """A suite file in expectations/ cannot be used; names the file and the problem."""


class QualityGateHalted(RuntimeError):
    """INTENTLAKE_QUALITY_POLICY=halt and a micro-batch failed an expectation: the stream stops unwritten."""

    def __init__(self, job: str, batch_id: int, failures: dict[str, list[str]], key: str = "event_id") -> None:
        shown = "; ".join(f"{name}: {len(keys)} rows, e.g. {key} {keys[:3]}" for name, keys in failures.items())
        otherwise = "quarantine failing rows" if job.startswith("bronze") else "record failures and go on"
        super().__init__(
            f"{job} batch {batch_id} failed the data quality gate ({shown}). Nothing of the batch was written; "
            f"ops.pipeline_runs has a 'halted' row with the failing keys. Fix the data or the suite and restart "
            f"(the batch is retried), or set INTENTLAKE_QUALITY_POLICY=quarantine to {otherwise}."
        )
        self.failures = failures


def _label(config: Any) -> str:
    column = (
        config.kwargs.get("column") or config.kwargs.get("column_A") or ",".join(config.kwargs.get("column_list", []))
    )
    return f"{config.type}({column})"


def _raised(info: Any) -> str | None:
    """The message of an exception GX caught while running an expectation (flat or per-metric info)."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info["raised_exception"] else None
    return next(
        (str(v.get("exception_message")) for v in info.values() if isinstance(v, dict) and v.get("raised_exception")),
        None,
    )


class QualityGate:
    """One suite, set up once (GX context, Spark data source, validation definition), run per DataFrame."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.spec = json.loads(path.read_text())
            meta = self.spec["meta"]
            self.key: str = meta["key"]
            self.columns: dict[str, str] = dict(meta["columns"])
            expectations = self.spec["expectations"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise QualitySuiteError(f"{path}: needs name, expectations, meta.key and meta.columns ({exc})") from None
        if self.key not in self.columns:
            raise QualitySuiteError(f"{path}: meta.key {self.key!r} must be one of meta.columns")
        for item in expectations:
            column = item.get("kwargs", {}).get("column")
            if column is not None and column not in self.columns:
                raise QualitySuiteError(f"{path}: {item.get('type')} checks {column!r}, which meta.columns lacks")
        self._definition: Any = None

    @classmethod
    @functools.cache
    def for_table(cls, table: str, directory: Path = EXPECTATIONS_DIR) -> QualityGate:
        """The gate of a table's suite: <directory>/<layer>_<name>.json (Settings.expectations_dir)."""
        return cls(directory / f"{table.replace('.', '_')}.json")

    def _validation(self) -> Any:
        if self._definition is None:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            import great_expectations as gx
            from great_expectations.core.expectation_suite import ExpectationSuite
            from great_expectations.data_context.types.base import ProgressBarsConfig

            logging.getLogger("great_expectations").setLevel(logging.WARNING)
            context = gx.get_context(mode="ephemeral")
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            spec = {k: v for k, v in self.spec.items() if k in ("name", "expectations", "meta")}
            suite = ExpectationSuite(**spec)
            if len(suite.expectations) != len(spec["expectations"]):  # GX logs and drops invalid ones
                raise QualitySuiteError(f"{self.path}: Great Expectations refused some expectations of the suite")
            suite = context.suites.add(suite)
            # persist=False: GX would otherwise cache every micro-batch and never release it
            asset = context.data_sources.add_spark(name="intentlake", persist=False).add_dataframe_asset(
                name=self.spec["name"]
            )
            batch = asset.add_batch_definition_whole_dataframe("micro_batch")
            self._definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{self.spec['name']}_gate", data=batch, suite=suite)
            )
        return self._definition

    def project(self, rows: DataFrame) -> DataFrame:
        """The rows as the suite sees them: one column per meta.columns expression."""
        return rows.select(*(F.expr(expr).alias(name) for name, expr in self.columns.items()))

    def failures(self, rows: DataFrame) -> dict[str, list[str]]:
        """Failing expectation -> keys of every failing row ({} when all pass). Keys only, never values.

        A pass/fail run first (BOOLEAN_ONLY: about a third of GX's Spark jobs); only a failing batch is
        validated again to collect the failing keys.
        """
        projected = self.project(rows).persist()
        try:
            validation = self._validation()
            quick = validation.run(batch_parameters={"dataframe": projected}, result_format="BOOLEAN_ONLY")
            if quick.success:
                return {}
            result = validation.run(
                batch_parameters={"dataframe": projected},
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": [self.key],
                    "exclude_unexpected_values": True,
                    "return_unexpected_index_query": False,
                },
            )
        finally:
            projected.unpersist()
        failures: dict[str, list[str]] = {}
        for outcome in result.results:
            if outcome.success:
                continue
            problem = _raised(outcome.exception_info)
            if problem is not None:
                raise QualitySuiteError(f"{self.path}: {_label(outcome.expectation_config)} could not run: {problem}")
            index = outcome.result.get("unexpected_index_list") or [{self.key: []}]
            failures[_label(outcome.expectation_config)] = [k for k in index[0][self.key] if k is not None]
        return failures
