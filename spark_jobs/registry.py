"""The table registry: every lakehouse table and what other code must know about it, read from tables/.

Each table's contract (tables/<layer>/<name>.sql) starts with comment lines that declare, besides the DDL:

    -- @producer: silver                   the operation(s) of spark_jobs/operations.py that write it
    -- @gated: silver                      the pipeline layer whose quality gate validates its new rows
    -- @person: anonymous_id = anonymous_id
    -- @person: scope_key = person_id when scope = 'person'
    -- @person: none (aggregates only)     or: it holds nothing that identifies a person, and why
    -- @person-exempt: subject (blanked by the erasure itself)

An `@person` line says that a column identifies a person, and as what: `person_id`, `anonymous_id`,
`user_id`, `identifier` (any identifier of the person in silver.identity_map) or `payload` (a raw input
record in any source format, matched field by field). Erasure deletes the rows whose key columns name the
person, so a table that stores a person's identifier must say so here: tests/unit/test_registry.py fails
for a table whose identifying column has no `@person` line.

Pure Python and cheap: the Airflow DAG files read it at parse time (one Asset per table).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

TABLES_DIR = Path(__file__).resolve().parents[1] / "tables"
LAYERS = ("bronze", "silver", "gold", "ops")  # the order tables are listed in (data flow, then operations)
PERSON_KINDS = ("person_id", "anonymous_id", "user_id", "identifier", "payload")
# Column names that identify a person wherever they appear: a table holding one declares it (or exempts it).
_PERSON_COLUMNS = "person_id anonymous_id user_id identifier kept_person_id retired_person_id raw"
IDENTIFYING_COLUMNS = frozenset([*_PERSON_COLUMNS.split(), "scope_key", "subject", "email", "phone", "match_value"])
_ANNOTATION = re.compile(r"^--\s*@(?P<key>[a-z-]+)\s*:\s*(?P<value>.*?)\s*$")
_PERSON = re.compile(r"^(?P<column>\w+)\s*=\s*(?P<kind>\w+)(?:\s+when\s+(?P<when>.+))?$", re.IGNORECASE)


class RegistryError(ValueError):
    """A contract's annotations are missing or wrong; the message names the file and the line."""


@dataclass(frozen=True)
class PersonKey:
    """A column that identifies a person: rows where it names them belong to them (optionally only `when`)."""

    column: str
    kind: str
    when: str | None = None


@dataclass(frozen=True)
class TableInfo:
    """What the registry knows about one table besides its schema."""

    name: str
    path: Path
    producers: tuple[str, ...]
    gated_by: str | None
    person_keys: tuple[PersonKey, ...]
    no_person_reason: str | None  # set when the table declares `@person: none (...)`
    exempt: tuple[str, ...]  # identifying columns erasure handles otherwise (`@person-exempt`)

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def holds_persons(self) -> bool:
        return bool(self.person_keys)


def _table_files() -> list[Path]:
    files = [p for layer in LAYERS for p in sorted((TABLES_DIR / layer).glob("*.sql"))]
    unknown = sorted(p.parent.name for p in TABLES_DIR.glob("*/*.sql") if p.parent.name not in LAYERS)
    if unknown:
        raise RegistryError(f"tables/: folders {unknown} are not layers; use one of {LAYERS}")
    return files


TABLES: tuple[str, ...] = tuple(f"{p.parent.name}.{p.stem}" for p in _table_files())


def _parse(name: str, path: Path) -> TableInfo:
    values: dict[str, list[tuple[int, str]]] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = _ANNOTATION.match(line.strip())
        if match:
            values.setdefault(match["key"], []).append((number, match["value"]))
    known = {"producer", "gated", "person", "person-exempt"}
    for key, found in values.items():
        if key not in known:
            raise RegistryError(f"{path}:{found[0][0]}: unknown annotation @{key}; use one of {sorted(known)}")

    def one(key: str) -> str | None:
        found = values.get(key, [])
        if len(found) > 1:
            raise RegistryError(f"{path}:{found[1][0]}: @{key} given twice")
        return found[0][1] if found else None

    producer = one("producer")
    if not producer:
        raise RegistryError(f"{path}: no `-- @producer: <operation>` line (which operation writes {name}?)")
    gated = one("gated")
    if gated is not None and gated not in LAYERS[:3]:
        raise RegistryError(f"{path}: @gated: {gated!r} is not a pipeline layer ({', '.join(LAYERS[:3])})")
    keys: list[PersonKey] = []
    reason = None
    for number, value in values.get("person", []):
        if value.lower().startswith("none"):
            reason = value[4:].strip(" ()") or "not given"
            continue
        match = _PERSON.match(value)
        if not match or match["kind"] not in PERSON_KINDS:
            raise RegistryError(
                f"{path}:{number}: @person: {value!r}: expected '<column> = <kind> [when <condition>]' with a kind "
                f"of {', '.join(PERSON_KINDS)}, or 'none (why)'"
            )
        keys.append(PersonKey(match["column"], match["kind"], match["when"]))
    if reason is not None and keys:
        raise RegistryError(f"{path}: @person: none, yet person keys are declared too")
    if reason is None and not keys:
        raise RegistryError(f"{path}: no `-- @person:` line (which columns identify a person, or 'none (why)')")
    exempt = tuple(c.strip() for c in (one("person-exempt") or "").split("(")[0].split(",") if c.strip())
    return TableInfo(
        name=name,
        path=path,
        producers=tuple(p.strip() for p in producer.split(",")),
        gated_by=gated,
        person_keys=tuple(keys),
        no_person_reason=reason,
        exempt=exempt,
    )


@functools.cache
def table_info(name: str) -> TableInfo:
    """The registry entry of a table such as 'silver.sessions' (RegistryError for an unknown one)."""
    if name not in TABLES:
        raise RegistryError(f"{name!r} is not a table (tables/ has: {', '.join(TABLES)})")
    layer, _, table = name.partition(".")
    return _parse(name, TABLES_DIR / layer / f"{table}.sql")


def gated_tables(layer: str) -> tuple[str, ...]:
    """The tables whose new rows the layer's quality gate validates."""
    return tuple(t for t in TABLES if table_info(t).gated_by == layer)


def person_tables() -> tuple[str, ...]:
    """The tables that can hold a person's rows (what erasure deletes from)."""
    return tuple(t for t in TABLES if table_info(t).holds_persons)


def produced_by(operation: str) -> tuple[str, ...]:
    """The tables an operation writes."""
    return tuple(t for t in TABLES if operation in table_info(t).producers)
