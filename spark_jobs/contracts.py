"""Table contracts: the DDL files in tables/ and the canonical event JSON Schema.

These files are the single source of truth for every schema. Spark StructTypes are derived from the
DDL column lists; tables are created from the DDL with the lakehouse location appended.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.registry import TABLES, TABLES_DIR
from spark_jobs.settings import Settings
from spark_jobs.spark import each_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# Every canonical_event.v<N>.schema.json in tables/events/ (the files are the one list of versions).
CANONICAL_SCHEMA_VERSIONS = tuple(
    sorted(int(p.name.split(".")[1][1:]) for p in (TABLES_DIR / "events").glob("canonical_event.v*.schema.json"))
)
_CREATE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(?P<name>\w+\.\w+)\s*\(", re.IGNORECASE)


class SchemaContractError(ValueError):
    """A contract file in tables/ is missing or cannot be read."""


@dataclass(frozen=True)
class TableContract:
    """One table's DDL, split into the parts code needs."""

    name: str
    path: Path
    ddl: str
    columns_ddl: str

    def create_statement(self, location: Path) -> str:
        """The contract's CREATE TABLE with the lakehouse location appended."""
        return f"{self.ddl.rstrip().rstrip(';')}\nLOCATION '{location}'"

    def schema(self) -> StructType:
        """The Spark schema of the table, parsed from the DDL column list (needs an active session)."""
        from pyspark.sql.types import StructType

        return StructType.fromDDL(self.columns_ddl)

    @property
    def column_names(self) -> list[str]:
        """Top-level column names in DDL order (pure Python, no Spark needed)."""
        return [item.split()[0] for item in _split_top_level(self.columns_ddl)]

    @property
    def column_types(self) -> dict[str, str]:
        """Column name -> type keyword ('INT', 'STRING', 'STRUCT' ...), pure Python."""
        return {item.split()[0]: item.split()[1].split("<")[0].upper() for item in _split_top_level(self.columns_ddl)}


def _matching_paren(text: str, open_at: int) -> int:
    """Index of the ')' closing the '(' at open_at, skipping quoted SQL strings ('' escapes a quote)."""
    depth, in_quote = 0, False
    for i in range(open_at, len(text)):
        ch = text[i]
        if ch == "'":
            in_quote = not in_quote
        elif not in_quote and ch in "(<":
            depth += 1
        elif not in_quote and ch in ")>":
            depth -= 1
            if depth == 0:
                return i
    raise SchemaContractError("unbalanced parentheses")


def _split_top_level(columns: str) -> list[str]:
    items, depth, in_quote, start = [], 0, False, 0
    for i, ch in enumerate(columns):
        if ch == "'":
            in_quote = not in_quote
        elif not in_quote and ch in "(<":
            depth += 1
        elif not in_quote and ch in ")>":
            depth -= 1
        elif not in_quote and depth == 0 and ch == ",":
            items.append(columns[start:i].strip())
            start = i + 1
    items.append(columns[start:].strip())
    return [item for item in items if item]


def _strip_sql_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


@functools.cache
def table_contract(name: str) -> TableContract:
    """The contract of a table such as 'bronze.events', read from tables/<layer>/<name>.sql."""
    layer, _, table = name.partition(".")
    path = TABLES_DIR / layer / f"{table}.sql"
    if not path.exists():
        raise SchemaContractError(f"{name}: no contract file at {path}")
    ddl = _strip_sql_comments(path.read_text())
    match = _CREATE.search(ddl)
    if not match or match.group("name") != name:
        raise SchemaContractError(f"{path}: expected 'CREATE TABLE IF NOT EXISTS {name} (' ")
    try:
        close = _matching_paren(ddl, match.end() - 1)
    except SchemaContractError as exc:
        raise SchemaContractError(f"{path}: {exc} in the column list") from None
    return TableContract(name=name, path=path, ddl=ddl, columns_ddl=ddl[match.end() : close].strip())


@functools.cache
def canonical_event_schema(version: int = 1) -> dict[str, Any]:
    """The canonical event JSON Schema of a version (tables/events/canonical_event.v<N>.schema.json)."""
    path = TABLES_DIR / "events" / f"canonical_event.v{version}.schema.json"
    if not path.exists():
        raise SchemaContractError(
            f"canonical event schema version {version} does not exist (known: {CANONICAL_SCHEMA_VERSIONS})"
        )
    return json.loads(path.read_text())


_registered: dict[tuple[int, str], Path] = {}


def migrate_table(spark: SparkSession, name: str, location: Path) -> list[str]:
    """Bring an existing table up to its contract: add the columns the contract gained; return their names.

    Columns are only ever added (nullable), never dropped or retyped; a column whose type differs from the
    contract is an error naming both types, since rewriting data is an operator's decision.
    """
    contract = table_contract(name)
    existing = {f.name: f.dataType for f in spark.read.format("delta").load(str(location)).schema.fields}
    wanted = {f.name: f.dataType for f in contract.schema().fields}
    for column, data_type in wanted.items():
        if column in existing and existing[column] != data_type:
            raise SchemaContractError(
                f"{name} at {location}: column {column} is {existing[column].simpleString()} but "
                f"{contract.path.name} says {data_type.simpleString()}; migrate the data before running"
            )
    added = [item for item in _split_top_level(contract.columns_ddl) if item.split()[0] not in existing]
    not_null = [item.split()[0] for item in added if re.search(r"\bNOT\s+NULL\b", item, re.IGNORECASE)]
    if not_null:
        raise SchemaContractError(f"{name}: cannot add NOT NULL columns {not_null} to an existing table")
    if added:
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({', '.join(added)})")
    _migrate_change_feed(spark, name, location, contract)
    return [item.split()[0] for item in added]


_CHANGE_FEED = re.compile(r"'delta\.enableChangeDataFeed'\s*=\s*'true'", re.IGNORECASE)


def _migrate_change_feed(spark: SparkSession, name: str, location: Path, contract: TableContract) -> None:
    """Turn the Change Data Feed on for a table whose contract has gained it (from the next version on)."""
    from delta.tables import DeltaTable

    if not _CHANGE_FEED.search(contract.ddl):
        return
    properties = DeltaTable.forPath(spark, str(location)).detail().first().properties or {}
    if properties.get("delta.enableChangeDataFeed", "").lower() != "true":
        spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')")


def ensure_tables(spark: SparkSession, settings: Settings, tables: tuple[str, ...] = TABLES) -> None:
    """Create each table from its contract at its lakehouse location and register its name in the catalog.

    An existing table is registered as it is and migrated forward (columns the contract added since).
    A name registered for another lakehouse root in this session is re-pointed (the data stays put).
    Tables are independent Delta logs, so several are created at once (a fresh lakehouse: ~2x faster).
    """
    todo = [name for name in tables if not _is_registered(spark, name, settings.table_path(name))]
    if not todo:
        return
    for schema in sorted({name.split(".")[0] for name in todo}):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")

    # each table is created in one commit, never half-made
    each_table(lambda name: _ensure_table(spark, name, settings.table_path(name)), todo)


def _is_registered(spark: SparkSession, name: str, location: Path) -> bool:
    return _registered.get((id(spark), name)) == location and spark.catalog.tableExists(name)


def _ensure_table(spark: SparkSession, name: str, location: Path) -> None:
    if spark.catalog.tableExists(name):
        spark.sql(f"DROP TABLE {name}")  # an external (LOCATION) table: only the catalog entry goes
    if (location / "_delta_log").is_dir():
        spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION '{location}'")
        migrate_table(spark, name, location)
    else:
        spark.sql(table_contract(name).create_statement(location))
    _registered[(id(spark), name)] = location


def read_table(spark: SparkSession, settings: Settings, name: str, version: int | None = None) -> DataFrame:
    """A lakehouse table as a DataFrame, read by its location (`version`: time travel to that version).

    The one way code reads a table: by path, so it needs no catalog and works on object storage alike.
    """
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(str(settings.table_path(name)))


def table_version(spark: SparkSession, settings: Settings, name: str) -> int:
    """The table's latest committed version."""
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, str(settings.table_path(name))).history(1).first().version)
