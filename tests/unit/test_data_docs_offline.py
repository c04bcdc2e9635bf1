"""Data Docs offline, without Spark: pages load their styles and scripts from local copies, never a CDN."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from spark_jobs.data_docs import OFFLINE, localize_pages, vendor_assets

pytestmark = pytest.mark.unit

# What a page loads: scripts, stylesheets, icons and images, and url(...) in styles. Links a person
# follows (<a href>) are not loaded.
_LOADS = re.compile(r"""<(?:script|link|img)\b[^>]*?\b(?:src|href)=["']([^"']+)["']|url\(\s*["']?([^"')]+)""")


def offline_problems(site: Path) -> list[str]:
    """What a browser without network misses on the site: remote assets, and local ones that are not there.

    Stylesheets are followed into their own url(...) references (Font Awesome's fonts).
    """
    problems: list[str] = []
    seen: set[Path] = set()

    def scan(file: Path) -> None:
        for match in _LOADS.finditer(file.read_text(errors="replace")):
            ref = match.group(1) or match.group(2)
            if ref.startswith(("data:", "#")):
                continue
            if re.match(r"(https?:)?//", ref):
                problems.append(f"{file.relative_to(site)} loads {ref}")
                continue
            target = (file.parent / ref.split("?")[0].split("#")[0]).resolve()
            if not target.is_file():
                problems.append(f"{file.relative_to(site)} refers to {ref}, which is not there")
            elif target.suffix == ".css" and target not in seen:
                seen.add(target)
                scan(target)

    for page in sorted(site.rglob("*.html")):
        scan(page)
    return problems


GX_LOGO = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com"
HEAD = f"""<html><head>
<style>@media (prefers-color-scheme: dark) {{
  .navbar-brand a {{ background: url('{GX_LOGO}/full_logo_dark.png') 0 0 no-repeat; }}
}}</style>
<link rel="stylesheet" href="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css">
<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css"/>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css" />
<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css">
<script src="https://code.jquery.com/jquery-3.7.1.min.js"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js" integrity="sha384-A" crossorigin="anonymous"></script>
<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" integrity="sha384-B" crossorigin="anonymous"></script>
<script src="https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js"></script>
<script src="https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js"></script>
</head><body>
<img src="{GX_LOGO}/logo-long.png?d=20250301T120000Z&dataContextId=0b9e8c3a" alt="Great Expectations">
<a href="https://greatexpectations.io">Great Expectations</a>
</body></html>
"""  # noqa: E501  (GX's own tags, as its templates write them)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A GX-like site: the index and a validation page four folders down, GX's own static/images."""
    (tmp_path / "static" / "images").mkdir(parents=True)
    (tmp_path / "static" / "images" / "logo-long.png").write_bytes(b"\x89PNG")
    (tmp_path / "static" / "images" / "favicon.ico").write_bytes(b"\0")
    favicon = '<link rel="icon" href="{}static/images/favicon.ico"></head>'
    (tmp_path / "index.html").write_text(HEAD.replace("</head>", favicon.format("./")))
    page = tmp_path / "validations" / "suite" / "run" / "20250301T120000Z" / "batch.html"
    page.parent.mkdir(parents=True)
    page.write_text(HEAD.replace("</head>", favicon.format("../../../")))  # one folder short, as GX writes it
    return tmp_path


def test_pages_load_every_asset_from_the_site_itself(site):
    assert offline_problems(site)  # as GX writes them: CDNs

    kept = localize_pages(site, vendor_assets(site))

    assert kept == []
    assert offline_problems(site) == []
    page = (site / "validations" / "suite" / "run" / "20250301T120000Z" / "batch.html").read_text()
    assert '<script src="../../../../static/vendor/jquery/jquery.min.js"></script>' in page
    assert '<link rel="stylesheet" href="../../../../static/vendor/font-awesome/css/all.min.css">' in page
    assert "integrity=" not in page  # the CDN file's hash would refuse the local copy
    assert 'href="../../../../static/images/favicon.ico"' in page
    assert 'href="https://greatexpectations.io"' in page  # a link to follow, not an asset: kept
    assert "prefers-color-scheme" not in page  # no dark theme, so GX's half of it is off too


def test_the_index_tables_get_a_local_stand_in_for_bootstrap_table(site):
    localize_pages(site, vendor_assets(site))

    index = (site / "index.html").read_text()
    assert index.index("jquery.min.js") < index.index("bootstrap.bundle.min.js") < index.index("bootstrap-table")
    stand_in = site / "static" / "vendor" / "intentlake" / "bootstrap-table-lite.js"
    assert "$.fn.bootstrapTable = function" in stand_in.read_text()


def test_an_asset_no_rule_knows_stays_and_is_reported(site, caplog):
    new = "https://cdn.example.org/new-lib@1.0/new-lib.min.js"
    (site / "index.html").write_text(HEAD.replace("</head>", f'<script src="{new}"></script></head>'))

    kept = localize_pages(site, vendor_assets(site))

    assert kept == [new]
    assert offline_problems(site) == [f"index.html loads {new}"]
    assert new in caplog.text


def test_every_cdn_asset_of_the_installed_gx_templates_has_an_offline_rule():
    """A newer GX that adds a CDN script or stylesheet fails here first, naming it."""
    gx = importlib.util.find_spec("great_expectations")  # its files, without the seconds of importing it
    assert gx is not None and gx.origin is not None
    templates = Path(gx.origin).parent / "render" / "view" / "templates"
    tags = re.compile(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"(https?://[^\"]+)\"")
    urls = {url for template in templates.glob("*.j2") for url in tags.findall(template.read_text())}

    assert len(urls) > 5
    assert [url for url in sorted(urls) if not any(pattern.search(url) for pattern, _ in OFFLINE)] == []
