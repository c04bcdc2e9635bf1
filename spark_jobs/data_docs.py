"""Great Expectations Data Docs: every table's current snapshot validated against its suite, as static HTML.

`build_data_docs` reads the current version of each table in TABLES (tables without a Delta log yet are
skipped and reported), projects its rows onto the suite's meta.columns (QualityGate.project), validates
them in a throwaway GX file context and has GX build its own Data Docs site, which is then copied to
`out_dir` (index.html, expectations/, validations/, static/).

Privacy: the docs carry counts, never row values. Validation runs with a result format that leaves out
unexpected values, unexpected rows and index queries, and every stored result is scrubbed again before
the site is rendered: only row counts and shares stay (no observed values: a min or max is a row's
value), and the message and traceback of an expectation that could not run are withheld, since Spark
errors may quote a value (an ANSI cast error does). The GX context, its stores and the raw results live
in a temporary directory that is deleted afterwards. Analytics stay off and building sends nothing
anywhere. GX's page template points its logo at a GX web server with the context id and a time in the
URL, so the pages use the site's own copy of the logo; the pages still load Bootstrap, jQuery and
Font Awesome from public CDNs when opened in a browser (GX's templates; offline they show unstyled).
"""

from __future__ import annotations

import copy
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.quality import QualityGate, QualitySuiteError
from spark_jobs.settings import TABLES, Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SITE = "intentlake"
# Counts only: no unexpected values, rows, index lists or queries (the same fields SUMMARY would give
# once values are excluded, with fewer Spark jobs).
RESULT_FORMAT = {
    "result_format": "BASIC",
    "partial_unexpected_count": 0,
    "include_unexpected_rows": False,
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
}
_COUNTS = frozenset(
    {
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "missing_count",
        "missing_percent",
        "unexpected_percent_total",
        "unexpected_percent_nonmissing",
    }
)
WITHHELD = "the expectation could not run; the error is withheld from Data Docs (it may quote row values)"
_GX_WEB_ASSET = re.compile(r"https://great-expectations-web-assets\.s3\.us-east-2\.amazonaws\.com/([\w.-]+)[^\"']*")


def _scrub(result: Any) -> Any:
    """A validation result reduced to what Data Docs may show: row counts and shares, no values, no errors.

    An aggregate expectation's observed_value goes too: a min, max or median is some row's value.
    """
    for outcome in result.results:
        outcome.result = {k: v for k, v in (outcome.result or {}).items() if k in _COUNTS}
        info = outcome.exception_info or {}
        raised = info.get("raised_exception") or any(
            isinstance(v, dict) and v.get("raised_exception") for v in info.values()
        )
        outcome.exception_info = {
            "raised_exception": bool(raised),
            "exception_message": WITHHELD if raised else None,
            "exception_traceback": WITHHELD if raised else None,  # the renderer needs text when raised
        }
    return result


def _local_assets(site: Path) -> None:
    """Point GX's remote logo (URL with the context id and a time) at the site's own static/images copy."""
    for page in site.rglob("*.html"):
        text = page.read_text()

        def local(match: re.Match[str], page: Path = page) -> str:
            image = site / "static" / "images" / match.group(1)
            return os.path.relpath(image, page.parent) if image.is_file() else match.group(0).split("?")[0]

        fixed = _GX_WEB_ASSET.sub(local, text)
        if fixed != text:
            page.write_text(fixed)


def _context(work: Path, site: Path) -> Any:
    """A GX file context in `work` with one Data Docs site in `site`, analytics and progress bars off."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    context = gx.get_context(mode="file", project_root_dir=str(work))
    context.enable_analytics(False)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    for name in list(context.list_data_docs_sites()):  # the scaffold's local_site, inside `work`
        context.delete_data_docs_site(name)
    context.add_data_docs_site(
        SITE,
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


def build_data_docs(spark: SparkSession, settings: Settings, out_dir: Path) -> dict[str, Any]:
    """Validate the current snapshot of every table against its suite and build GX Data Docs into out_dir.

    Returns {"index": <out_dir/index.html>, "tables": {table: {"success", "evaluated", "failed"}},
    "failing": [tables with a failed expectation], "skipped": [tables whose location has no Delta log]}.
    A suite GX cannot use raises QualitySuiteError.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # before GX is imported; the context says so too
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite

    out_dir = Path(out_dir).resolve()
    tables: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    with tempfile.TemporaryDirectory(prefix="intentlake-gx-") as tmp:
        work, site = Path(tmp) / "context", Path(tmp) / "site"
        context = _context(work, site)
        source = context.data_sources.add_spark(name=SITE, persist=False)
        for table in TABLES:
            location = settings.table_path(table)
            if not (location / "_delta_log").is_dir():
                skipped.append(table)
                continue
            gate = QualityGate.for_table(table, settings.expectations_dir)
            spec = copy.deepcopy({k: v for k, v in gate.spec.items() if k in ("name", "expectations", "meta")})
            suite = ExpectationSuite(**spec)
            if len(suite.expectations) != len(spec["expectations"]):  # GX logs and drops invalid ones
                raise QualitySuiteError(f"{gate.path}: Great Expectations refused some expectations of the suite")
            suite = context.suites.add(suite)
            batch = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("snapshot")
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{spec['name']}_snapshot", data=batch, suite=suite)
            )
            rows = gate.project(spark.read.format("delta").load(str(location))).persist()
            try:
                result = definition.run(batch_parameters={"dataframe": rows}, result_format=RESULT_FORMAT)
            finally:
                rows.unpersist()
            stats = result.statistics
            tables[table] = {
                "success": bool(result.success),
                "evaluated": int(stats["evaluated_expectations"]),
                "failed": int(stats["unsuccessful_expectations"]),
            }
        store = context.validation_results_store
        for key in store.list_keys():  # what GX stored is what the site renders: scrub it first
            store.set(key, _scrub(store.get(key)))
        context.build_data_docs(site_names=[SITE])
        _local_assets(site)
        out_dir.mkdir(parents=True, exist_ok=True)
        for entry in site.iterdir():  # replace what an earlier build left, keep anything else in out_dir
            target = out_dir / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            shutil.move(str(entry), str(target))
    failing = sorted(t for t, r in tables.items() if not r["success"])
    return {"index": out_dir / "index.html", "tables": tables, "failing": failing, "skipped": skipped}
