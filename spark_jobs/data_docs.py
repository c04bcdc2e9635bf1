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
anywhere.

Offline: GX's page templates load their stylesheets and scripts from public CDNs and its logo from a GX
web server (with the context id and a time in the URL). The built pages load nothing from the network
instead (`localize_pages`): Bootstrap 4, jQuery and Font Awesome are copied into static/vendor/ from
their XStatic packages on PyPI (the `platform` extra pins them), the logo is the site's own copy, and
bootstrap-table, which no PyPI package carries, is replaced by a small stand-in (`TABLE_JS`) that draws
the index's tables sorted, searchable and with row links, but without filter controls or paging. What
the pages never need offline is left out: Popper (inside Bootstrap's bundle), the date picker of the
filter controls, Vega (charts; counts-only pages have none) and the dark theme (the pages stay light,
GX's own dark-mode overrides switched off with it).
"""

from __future__ import annotations

import copy
import importlib
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
_GX_IMAGE_ALIASES = {"full_logo_dark.png": "logo-long.png"}  # the dark theme's logo is not in GX's package
# A reference to the site's own static/ folder, to be made relative to the page afresh: GX writes a validation
# page's favicon link one folder short.
_SITE_STATIC = re.compile(r'\b(?P<attr>src|href)="(?:\.\.?/)*static/(?P<path>[^"?#]+)"')
# GX's own dark-mode overrides assume the dark Bootstrap theme, which is not on PyPI: alone they would put
# dark tables and a black footer on a light page, so the pages stay light whatever the browser prefers.
_DARK_MODE = re.compile(r"@media\s*\(prefers-color-scheme:\s*dark\)")

VENDOR = Path("static") / "vendor"
# static/vendor/<folder>: files copied from the data folder of an XStatic package (PyPI: XStatic-<name>),
# as {folder: (xstatic.pkg module, PyPI name, [files or folders])}. A stylesheet's fonts keep their place
# beside it (Font Awesome's css/ refers to ../webfonts/).
VENDORED = {
    "bootstrap": ("bootstrap", "xstatic-bootstrap", ["css/bootstrap.min.css", "js/bootstrap.bundle.min.js"]),
    "jquery": ("jquery", "xstatic-jquery", ["jquery.min.js"]),
    "font-awesome": ("font_awesome", "xstatic-font-awesome", ["css/all.min.css", "webfonts"]),
}
TABLE_JS = "intentlake/bootstrap-table-lite.js"  # under static/vendor/, written from TABLE_JS_SOURCE
# Each CDN asset of GX's page templates, by a pattern of its URL: the local file under static/vendor/ that
# replaces it, or None when the pages do without it offline (see the module docstring).
OFFLINE = (
    (re.compile(r"/bootstrap/4\.[\d.]+/css/bootstrap(\.min)?\.css$"), "bootstrap/css/bootstrap.min.css"),
    (re.compile(r"/bootstrap/4\.[\d.]+/js/bootstrap(\.min)?\.js$"), "bootstrap/js/bootstrap.bundle.min.js"),
    (re.compile(r"/popper\.js/1\.[\d.]+/"), None),
    (re.compile(r"/jquery-3\.[\d.]+(\.min)?\.js$"), "jquery/jquery.min.js"),
    (re.compile(r"/font-awesome/6\.[\d.]+/css/all(\.min)?\.css$"), "font-awesome/css/all.min.css"),
    (re.compile(r"/bootstrap-table@[\d.]+/dist/bootstrap-table(\.min)?\.js$"), TABLE_JS),
    (re.compile(r"/bootstrap-table@[\d.]+/dist/"), None),  # its stylesheet and filter-control extension
    (re.compile(r"/bootstrap-datepicker/"), None),
    (re.compile(r"/vega(-lite|-embed)?@\d+$"), None),
    (re.compile(r"/bootstrap-dark@[\d.]+/"), None),
)
_REMOTE_TAG = re.compile(
    r"(?P<indent>[ \t]*)<(?P<tag>script|link)\b[^>]*?\b(?:src|href)=\"(?P<url>https?://[^\"]+)\"[^>]*>(?:\s*</script>)?\n?"
)
log = logging.getLogger(__name__)

TABLE_JS_SOURCE = """\
/* intentlake's stand-in for bootstrap-table (no PyPI package carries it), so that Data Docs' tables show
   offline: GX calls $(table).bootstrapTable({columns, data, ...}); this draws a plain Bootstrap table in
   the asked order (a sortable header re-sorts on click), with a search box if asked and GX's row links.
   Filter controls and paging are not drawn. */
(function ($) {
  "use strict";
  function on(value) { return value === true || value === "true"; }
  function sortKey(columns, field) {
    var column = columns.filter(function (c) { return c.field === field; })[0];
    return (column && column.sortName) || field;
  }
  function compare(a, b) {
    if (a === b) return 0;
    if (a === undefined || a === null) return -1;
    if (b === undefined || b === null) return 1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  function call(name, args) {
    var f = typeof name === "function" ? name : window[name];
    return typeof f === "function" ? f.apply(null, args) : null;
  }
  $.fn.bootstrapTable = function (options) {
    if (typeof options === "string") return this;  /* methods such as clearFilterControl: nothing to clear */
    return this.each(function () {
      var $table = $(this).empty().addClass("table table-sm table-hover");
      var columns = options.columns || [], rows = (options.data || []).slice();
      var key = options.sortName ? sortKey(columns, options.sortName) : null;
      var descending = options.sortOrder === "desc", query = "";
      var $head = $("<tr>").appendTo($("<thead>").appendTo($table));
      var $body = $("<tbody>").appendTo($table);
      $(options.toolbar).empty();  /* its Clear Filters button: there are no filter controls */
      function draw() {
        if (key) rows.sort(function (a, b) { var c = compare(a[key], b[key]); return descending ? -c : c; });
        $body.empty();
        rows.forEach(function (row, index) {
          var $tr = $("<tr>");
          columns.forEach(function (c) {
            $("<td>").html(row[c.field] == null ? "" : String(row[c.field])).appendTo($tr);
          });
          if (query && $tr.text().toLowerCase().indexOf(query) < 0) return;
          var attributes = call(options.rowAttributes, [row, index]), style = call(options.rowStyle, [row, index]);
          if (attributes) $tr.attr(attributes);
          if (style && style.css) $tr.css(style.css);
          if (style && style.classes) $tr.addClass(style.classes);
          $tr.on("click", function () { $table.trigger("click-row.bs.table", [row, $tr]); });
          $body.append($tr);
        });
      }
      columns.forEach(function (column) {
        var $th = $("<th>").html(column.title || "").appendTo($head);
        if (!on(column.sortable)) return;
        $th.css("cursor", "pointer").on("click", function () {
          var k = sortKey(columns, column.field);
          descending = key === k ? !descending : false;
          key = k;
          draw();
        });
      });
      if (on(options.search)) {
        $('<input type="search" class="form-control form-control-sm mb-2" placeholder="Search">')
          .insertBefore($table).on("input", function () { query = this.value.toLowerCase(); draw(); });
      }
      draw();
    });
  };
})(jQuery);
"""


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


def vendor_assets(site: Path) -> dict[str, Path]:
    """Copy the pages' third-party assets into site/static/vendor/; {file under static/vendor: its copy}.

    A file whose package is not installed is missing from the answer (localize_pages then keeps its CDN
    link and says which package to install).
    """
    copied: dict[str, Path] = {}
    for folder, (module, distribution, entries) in VENDORED.items():
        try:
            data = Path(importlib.import_module(f"xstatic.pkg.{module}").BASE_DIR)
        except ImportError:
            log.warning("Data Docs: %s is not installed (pip install 'intentlake[platform]'); its pages load "
                        "%s from a CDN", distribution, folder)  # fmt: skip
            continue
        for entry in entries:
            source, target = data / entry, site / VENDOR / folder / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                shutil.copyfile(source, target)
            copied[f"{folder}/{entry}"] = target
    table_js = site / VENDOR / TABLE_JS
    table_js.parent.mkdir(parents=True, exist_ok=True)
    table_js.write_text(TABLE_JS_SOURCE)
    copied[TABLE_JS] = table_js
    return copied


def localize_pages(site: Path, local: dict[str, Path]) -> list[str]:
    """Rewrite every page of the site to load nothing from the network; returns the remote URLs kept.

    CDN scripts and stylesheets become the local copies in `local` ({file under static/vendor: path}) or are
    dropped (OFFLINE); GX's logo, which carries the context id and a time in its URL, becomes the site's
    own static/images copy, and every link into static/ is made relative to its page. A URL no rule knows
    (a newer GX's template) is kept and logged.
    """
    kept: set[str] = set()
    for page in site.rglob("*.html"):
        text = page.read_text()

        def relative(path: Path, page: Path = page) -> str:
            return os.path.relpath(path, page.parent)

        def image(match: re.Match[str]) -> str:
            name = _GX_IMAGE_ALIASES.get(match.group(1), match.group(1))
            own = site / "static" / "images" / name
            return relative(own) if own.is_file() else match.group(0)

        def asset(match: re.Match[str]) -> str:
            url = match["url"]
            for pattern, file in OFFLINE:
                if pattern.search(url.split("?")[0]):
                    if file is None:
                        return ""
                    if file in local:  # no integrity attribute: the hash was the CDN file's
                        ref = relative(local[file])
                        tag = (f'<script src="{ref}"></script>' if match["tag"] == "script"
                               else f'<link rel="stylesheet" href="{ref}">')  # fmt: skip
                        return f"{match['indent']}{tag}\n"
                    break
            kept.add(url)
            return match.group(0)

        def static(match: re.Match[str]) -> str:
            own = site / "static" / match["path"]
            return f'{match["attr"]}="{relative(own)}"' if own.is_file() else match.group(0)

        fixed = _REMOTE_TAG.sub(asset, _GX_WEB_ASSET.sub(image, text))
        fixed = _SITE_STATIC.sub(static, fixed)
        fixed = _DARK_MODE.sub("@media not all", fixed)
        kept.update(m.group(0) for m in _GX_WEB_ASSET.finditer(fixed))
        if fixed != text:
            page.write_text(fixed)
    for url in sorted(kept):
        log.warning("Data Docs: the pages still load %s from the network (no local copy for it)", url)
    return sorted(kept)


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
        localize_pages(site, vendor_assets(site))
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
