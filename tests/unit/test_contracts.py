"""Table contracts parse, and the canonical event JSON Schema agrees with bronze.events."""

from __future__ import annotations

import pytest

from spark_jobs.bronze.job import LINEAGE_COLUMNS
from spark_jobs.contracts import (
    CANONICAL_SCHEMA_VERSIONS,
    SchemaContractError,
    canonical_event_schema,
    table_contract,
)
from spark_jobs.settings import TABLES

pytestmark = pytest.mark.unit

JSON_TO_DDL = {"string": "STRING", "number": "DOUBLE", "object": "STRUCT", "array": "ARRAY"}


@pytest.mark.parametrize("name", TABLES)
def test_every_table_has_a_contract_with_commented_columns(name):
    contract = table_contract(name)
    assert contract.column_names, name
    assert contract.columns_ddl.count("COMMENT") == len(contract.column_names)
    assert "USING DELTA" in contract.ddl


def test_canonical_event_schema_and_bronze_events_name_the_same_fields():
    newest = canonical_event_schema(max(CANONICAL_SCHEMA_VERSIONS))
    bronze = table_contract("bronze.events")
    canonical_columns = [c for c in bronze.column_names if c not in LINEAGE_COLUMNS]
    assert sorted(canonical_columns) == sorted(newest["properties"])
    for version in CANONICAL_SCHEMA_VERSIONS:  # every older version's fields are still columns
        assert set(canonical_event_schema(version)["properties"]) <= set(canonical_columns), version


@pytest.mark.parametrize("version", CANONICAL_SCHEMA_VERSIONS)
def test_canonical_event_field_types_match_the_bronze_column_types(version):
    schema = canonical_event_schema(version)["properties"]
    types = table_contract("bronze.events").column_types
    for name, spec in schema.items():
        declared = spec.get("type")
        declared = next(t for t in declared if t != "null") if isinstance(declared, list) else declared
        if declared is None:  # enum / const
            continue
        expected = "MAP" if name == "properties" else JSON_TO_DDL[declared]
        if name in ("occurred_at", "received_at"):
            expected = "TIMESTAMP"
        assert types[name] == expected, name


def test_unknown_table_or_schema_version_is_a_clear_error():
    with pytest.raises(SchemaContractError, match="no contract file"):
        table_contract("bronze.nope")
    with pytest.raises(SchemaContractError, match="version 9 does not exist"):
        canonical_event_schema(9)
