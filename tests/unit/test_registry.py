"""The table registry (tables/ annotations): every table says who writes it and which columns identify a
person, so erasure, the quality gates, status and the DAGs' Assets read one list."""

from __future__ import annotations

import pytest

from spark_jobs import operations
from spark_jobs.contracts import table_contract
from spark_jobs.registry import (
    IDENTIFYING_COLUMNS,
    TABLES,
    RegistryError,
    _parse,
    gated_tables,
    person_tables,
    table_info,
)
from spark_jobs.settings import REPO_ROOT, Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", TABLES)
def test_every_identifying_column_is_a_person_key_erasure_deletes_by(name):
    info = table_info(name)
    declared = {key.column for key in info.person_keys} | set(info.exempt)
    identifying = set(table_contract(name).column_names) & IDENTIFYING_COLUMNS
    missing = identifying - declared
    assert not missing, f"{info.path.name}: {sorted(missing)} identify a person; add `-- @person: <column> = <kind>`"
    assert {key.column for key in info.person_keys} <= set(table_contract(name).column_names), name


def test_a_table_storing_a_person_without_a_person_key_is_caught(tmp_path):
    contract = tmp_path / "visits.sql"
    contract.write_text(
        "-- @producer: silver\n-- @person: none (said wrongly)\n"
        "CREATE TABLE IF NOT EXISTS silver.visits (\n  anonymous_id STRING NOT NULL\n)\n"
    )
    info = _parse("silver.visits", contract)
    assert info.no_person_reason and not info.person_keys  # parses: the column check above is what fails
    contract.write_text("-- @producer: silver\nCREATE TABLE IF NOT EXISTS silver.visits (\n  x STRING\n)\n")
    with pytest.raises(RegistryError, match=r"visits.sql: no `-- @person:` line"):
        _parse("silver.visits", contract)
    contract.write_text("-- @producer: silver\n-- @person: anonymous_id = device\nCREATE TABLE silver.visits (x INT)\n")
    with pytest.raises(RegistryError, match=r"visits.sql:2: @person: 'anonymous_id = device'"):
        _parse("silver.visits", contract)


@pytest.mark.parametrize("name", TABLES)
def test_every_producer_is_an_operation(name):
    assert set(table_info(name).producers) <= set(operations.OPERATIONS), name


@pytest.mark.parametrize("layer", operations.LAYERS)
def test_each_layer_gates_tables_that_have_a_suite(layer):
    gated = gated_tables(layer)
    assert gated
    for name in gated:
        assert (REPO_ROOT / "expectations" / f"{name.replace('.', '_')}.json").exists(), name
        assert name.startswith(f"{layer}."), name


def test_the_table_list_is_the_contract_files_and_settings_read_it():
    files = {f"{p.parent.name}.{p.stem}" for p in (REPO_ROOT / "tables").glob("*/*.sql")}
    assert set(TABLES) == files
    assert Settings.from_env().table_path("gold.user_segments").parts[-2:] == ("gold", "user_segments")
    assert "gold.kpis_daily" not in person_tables() and "bronze.quarantine" in person_tables()
