"""Every table has a data-quality suite the gate can load, over columns its DDL really has (no Spark)."""

from __future__ import annotations

import re

import pytest

from spark_jobs.contracts import table_contract
from spark_jobs.quality import EXPECTATIONS_DIR, QualityGate
from spark_jobs.settings import TABLES

pytestmark = pytest.mark.unit

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_WORD = re.compile(r"[A-Za-z_]\w*")
# Columns that hold personal data as such: no suite's key may be built from them (keys go into reports).
PERSONAL = {"bronze.quarantine": {"raw"}, "ops.erasure_requests": {"subject", "plan"}}


def _words(expression: str) -> set[str]:
    """Identifiers of a Spark SQL expression outside string literals (column names, functions, keywords)."""
    return set(_WORD.findall(_STRING_LITERAL.sub("''", expression)))


@pytest.mark.parametrize("table", TABLES)
def test_every_table_has_a_suite_the_gate_loads(table):
    path = EXPECTATIONS_DIR / f"{table.replace('.', '_')}.json"
    assert path.is_file(), f"{table} has no suite at {path}"
    gate = QualityGate(path)  # checks name, expectations, meta.key in meta.columns, columns checked exist
    assert gate.spec["name"] == path.stem
    assert gate.spec["meta"]["table"] == table
    assert gate.spec["expectations"], f"{path.name} checks nothing"
    for item in gate.spec["expectations"]:
        assert item.get("meta", {}).get("why"), f"{path.name}: {item['type']} does not say why"
        assert set(item["kwargs"].get("column_list", [])) <= set(gate.columns), path.name


@pytest.mark.parametrize("table", TABLES)
def test_suite_columns_are_columns_of_the_ddl_or_expressions_over_them(table):
    """A bare name must be a DDL column; an expression must read at least one DDL column; a projected name
    that is a DDL column must be that column. (The spark tests resolve every expression for real.)"""
    ddl = set(table_contract(table).column_names)
    gate = QualityGate.for_table(table)
    for name, expression in gate.columns.items():
        if _WORD.fullmatch(expression.strip()):
            assert expression.strip() in ddl, f"{table}: meta.columns {name!r} reads unknown column {expression!r}"
        else:
            assert _words(expression) & ddl, f"{table}: meta.columns {name!r} = {expression!r} reads no column"
        if name in ddl:
            assert expression.strip() == name, f"{table}: {name!r} is a column but projects {expression!r}"


@pytest.mark.parametrize("table", sorted(PERSONAL))
def test_suite_keys_are_not_built_from_personal_columns(table):
    gate = QualityGate.for_table(table)
    assert not _words(gate.columns[gate.key]) & PERSONAL[table], f"{table}: meta.key reads personal data"


def test_quarantine_suite_never_reads_the_raw_payload():
    gate = QualityGate.for_table("bronze.quarantine")
    assert not [name for name, expression in gate.columns.items() if "raw" in _words(expression)]


def test_great_expectations_accepts_every_expectation_of_every_suite():
    """GX logs and drops an expectation it cannot build; QualityGate would fail only when it first runs."""
    import copy
    import os

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from great_expectations.core.expectation_suite import ExpectationSuite

    for table in TABLES:
        spec = copy.deepcopy(QualityGate.for_table(table).spec)  # GX writes into the suite's meta
        suite = ExpectationSuite(name=spec["name"], expectations=spec["expectations"], meta=spec["meta"])
        assert len(suite.expectations) == len(spec["expectations"]), table
