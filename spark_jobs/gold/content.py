"""Content picks for batch channels: config/content_rules.yaml -> gold.content_assignments.

Triggers are CEL expressions (the `cel` package: a maintained, sandboxed, non-Turing-complete expression
language; nothing in a trigger can reach Python, files or the JVM). They are compiled and checked when the
file loads: syntax, variables that do not exist, a result that is not true/false, and type errors found
by evaluating every trigger on two typed sample contexts. Then each person's context (current segment,
the session that decided it, its micro-moments and the best send hour) is evaluated on the executors and,
per channel, the highest-priority matching rule is written. A trigger that fails on a real row (usually a
null compared with a number) does not match; the failures are counted per rule in the run's details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.bronze.vocabulary import vocabulary_at, vocabulary_beside
from spark_jobs.config import InvalidConfigError, read_mapping
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.gold.scoring import moment_counts
from spark_jobs.merge import MergeCounts, replace_scopes
from spark_jobs.settings import Settings
from spark_jobs.silver.moments import MOMENT_TYPES
from spark_jobs.silver.sessions import custom_feature_columns

TABLE = "gold.content_assignments"
ADAPTATIONS = ("tone", "format", "cta")
# variable -> CEL type of the context a trigger sees (and the Spark column it is read from)
_STRINGS = ("segment", "model_version", "device_type", "traffic_source", "traffic_medium", "campaign", "timezone",
            "daypart", "session_phase", "send_time_source")  # fmt: skip
_INTS = ("sessions", "local_hour", "local_weekday", "cart_adds", "product_views", "wishlist_adds", "searches",
         "page_depth", "best_local_hour")  # fmt: skip


def _variables() -> dict[str, str]:

    types = {name: "string" for name in _STRINGS}
    types.update({name: "int" for name in _INTS})
    types.update({f"moments_{kind}": "int" for kind in MOMENT_TYPES})
    types.update({"intent_score": "double", "converted": "bool"})
    # what only a live decision knows (spark_jobs/serving/decisions.py); null in gold's batch picks
    types.update({"search_query": "string"})
    return types


VARIABLES = _variables()
_SAMPLES = (
    {"string": "", "int": 0, "double": 0.0, "bool": False},
    {"string": "x", "int": 1, "double": 1.0, "bool": True},
)


@dataclass(frozen=True)
class ContentRule:
    name: str
    priority: int
    channels: tuple[str, ...]
    trigger: str
    tone: str
    format: str
    cta: str


@dataclass(frozen=True)
class Place:
    """A configured place live rules measure the distance to (variable distance_km_<key>)."""

    key: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True)
class ContentRules:
    channels: tuple[str, ...]  # batch channels: gold.content_assignments holds a pick per person for each
    rules: tuple[ContentRule, ...]  # in evaluation order: priority descending, then file order
    version: str  # sha256 of the file (first 12 hex digits): which rules produced a pick
    # the variables triggers may read: VARIABLES, custom_<key> (config/event_vocabulary.yaml beside it) and
    # distance_km_<place>
    variables: tuple[tuple[str, str], ...] = tuple(VARIABLES.items())
    live_channels: tuple[str, ...] = ()  # channels the decision API picks for, with the request's context
    places: tuple[Place, ...] = ()


def compile_rules(rules: ContentRules) -> list[tuple[ContentRule, Any, tuple[str, ...]]]:
    """Each rule with its compiled trigger and the variables it reads, in evaluation order (compile once)."""
    import cel

    compiled = []
    for rule in rules.rules:
        program = cel.compile(rule.trigger)
        compiled.append((rule, program, tuple(sorted(program.variables()))))
    return compiled


def matching(
    programs: list[tuple[ContentRule, Any, tuple[str, ...]]], context: dict[str, Any]
) -> tuple[list[ContentRule], list[str]]:
    """The rules whose trigger is true for a context (every variable present, null where unknown), in
    evaluation order, and the names of those that could not be evaluated on it (they do not match). The one
    evaluation gold's batch picks and the decision API both call. Each trigger is handed only the variables
    it reads (the whole context costs ~9x more per evaluation: each variable is converted for CEL)."""
    matched: list[ContentRule] = []
    failed: list[str] = []
    for rule, program, names in programs:
        try:
            if program.execute({name: context[name] for name in names}) is True:
                matched.append(rule)
        except (TypeError, RuntimeError, ValueError):
            failed.append(rule.name)
    return matched, failed


def choose(matched: list[ContentRule], channel: str) -> ContentRule | None:
    """The winning rule for a channel: the first matching rule (highest priority) that serves it."""
    return next((rule for rule in matched if channel in rule.channels), None)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, mean Earth radius 6,371 km)."""
    import math

    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))


def _compile(path: Path, name: str, trigger: str, variables: dict[str, str]) -> Any:
    import cel

    where = f"rule '{name}'"
    try:
        program = cel.compile(trigger)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidConfigError(path, where, f"trigger {trigger!r} is not valid CEL: {first}") from None
    unknown = sorted(set(program.variables()) - set(variables))
    if unknown:
        raise InvalidConfigError(path, where, f"unknown variable(s) {unknown} in trigger {trigger!r}; "
                                 f"available: {sorted(variables)}")  # fmt: skip
    for sample in _SAMPLES:
        context = {v: sample[t] for v, t in variables.items()}
        try:
            result = program.execute(context)
        except (TypeError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise InvalidConfigError(
                path, where, f"trigger {trigger!r} fails on typed sample values: {first}"
            ) from None
        if not isinstance(result, bool):
            raise InvalidConfigError(path, where, f"trigger {trigger!r} gives {result!r}, not true or false")
    return program


def load_content_rules(path: Path) -> ContentRules:
    """Read and check config/content_rules.yaml; InvalidConfigError names the rule and the problem."""
    doc = read_mapping(path, {"channels", "live_channels", "places", "rules"}, "channels and rules")
    channels = doc.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise InvalidConfigError(path, "channels", "expected a non-empty list of channel names (email, crm, ...)")
    live = doc.get("live_channels", [])
    if not isinstance(live, list) or not all(isinstance(c, str) and c for c in live) or set(live) & set(channels):
        raise InvalidConfigError(path, "live_channels", f"expected a list of channel names (web, app) that are "
                                 f"not batch channels {channels}")  # fmt: skip
    places = _load_places(path, doc.get("places", {}))
    raw = doc.get("rules")
    if not isinstance(raw, list) or not raw:
        raise InvalidConfigError(path, "rules", "expected a non-empty list of {name, priority, trigger, adaptations}")
    rules, seen = [], set()
    variables = {**VARIABLES, **dict.fromkeys(vocabulary_beside(path).feature_columns, "int"),
                 **{f"distance_km_{p.key}": "double" for p in places}}  # fmt: skip
    every_channel = [*channels, *live]
    allowed = {"name", "priority", "channels", "trigger", "adaptations", "description"}
    for i, spec in enumerate(raw, start=1):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
            raise InvalidConfigError(path, f"rule #{i}", "must be a mapping with a non-empty name")
        name = spec["name"].strip()
        where = f"rule '{name}'"
        if name in seen:
            raise InvalidConfigError(path, where, "is defined twice; rule names must be unique")
        seen.add(name)
        if set(spec) - allowed:
            raise InvalidConfigError(path, where, f"unknown keys {sorted(set(spec) - allowed)}; allowed: "
                                     f"{sorted(allowed)}")  # fmt: skip
        priority = spec.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise InvalidConfigError(path, where, f"priority {priority!r} must be a whole number")
        rule_channels = spec.get("channels", channels)
        if not isinstance(rule_channels, list) or not rule_channels or set(rule_channels) - set(every_channel):
            raise InvalidConfigError(path, where, f"channels {rule_channels!r} must be a non-empty list of "
                                     f"{every_channel}")  # fmt: skip
        trigger = spec.get("trigger")
        if isinstance(trigger, bool):
            trigger = "true" if trigger else "false"
        if not isinstance(trigger, str) or not trigger.strip():
            raise InvalidConfigError(path, where, "needs a trigger (a CEL expression that is true or false)")
        _compile(path, name, trigger, variables)
        adaptations = spec.get("adaptations")
        if not isinstance(adaptations, dict) or set(adaptations) != set(ADAPTATIONS):
            raise InvalidConfigError(path, where, f"adaptations must have exactly {list(ADAPTATIONS)}")
        if not all(isinstance(v, str) and v.strip() for v in adaptations.values()):
            raise InvalidConfigError(path, where, "each adaptation (tone, format, cta) must be a non-empty text")
        rules.append(ContentRule(name, priority, tuple(rule_channels), trigger.strip(),
                                 *(adaptations[a].strip() for a in ADAPTATIONS)))  # fmt: skip
    order = sorted(range(len(rules)), key=lambda i: (-rules[i].priority, i))
    version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return ContentRules(tuple(channels), tuple(rules[i] for i in order), version, tuple(variables.items()),
                        tuple(live), places)  # fmt: skip


def _load_places(path: Path, raw: object) -> tuple[Place, ...]:
    """places: {key: {name, lat, lon}}: keys of lower-case letters, digits and _ (they name a variable)."""
    import re

    if not isinstance(raw, dict):
        raise InvalidConfigError(path, "places", "expected a mapping of place key -> {name, lat, lon}")
    places = []
    for key, spec in raw.items():
        where = f"place '{key}'"
        if not isinstance(key, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise InvalidConfigError(path, where, "a key is lower-case letters, digits and _ (it names the "
                                     "variable distance_km_<key>)")  # fmt: skip
        if not isinstance(spec, dict) or set(spec) != {"name", "lat", "lon"}:
            raise InvalidConfigError(path, where, "expected exactly name, lat and lon")
        lat, lon = spec["lat"], spec["lon"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)) or not (
            -90 <= lat <= 90 and -180 <= lon <= 180
        ):
            raise InvalidConfigError(path, where, f"lat {lat!r} / lon {lon!r}: degrees within -90..90 / -180..180")
        places.append(Place(key, str(spec["name"]), float(lat), float(lon)))
    return tuple(places)


def person_contexts(spark: SparkSession, settings: Settings, variables: dict[str, str] | None = None) -> DataFrame:
    """One row per person in gold.user_segments with every trigger variable (nulls where unknown)."""
    variables = variables or VARIABLES
    vocabulary = vocabulary_at(settings.event_vocabulary_file)
    segments = read_table(spark, settings, "gold.user_segments").select(
        "person_id", "segment", "intent_score", "session_id", "sessions", "model_version"
    )
    silver = read_table(spark, settings, "silver.sessions")
    wanted = [c for c in (*_STRINGS, *_INTS, "converted") if c in silver.columns and c not in segments.columns]
    sessions = silver.select("session_id", "person_id", *wanted, *custom_feature_columns(vocabulary))
    moments = moment_counts(spark, settings, segments, ["session_id"])
    send = read_table(spark, settings, "gold.send_times").select(
        "person_id", "best_local_hour", F.col("source").alias("send_time_source")
    )
    joined = (
        segments.join(sessions, ["session_id", "person_id"], "left")
        .join(moments, "session_id", "left")
        .join(send, "person_id", "left")
    )
    columns = []
    for name, kind in variables.items():
        if name.startswith(("moments_", "custom_")) and name in joined.columns:
            columns.append(F.coalesce(F.col(name), F.lit(0)).cast("int").alias(name))
        elif name in joined.columns:
            spark_type = {"string": "string", "int": "int", "double": "double", "bool": "boolean"}[kind]
            columns.append(F.col(name).cast(spark_type).alias(name))
        else:
            columns.append(F.lit(None).cast("string").alias(name))
    return joined.select("person_id", "session_id", *columns)


_OUTPUT = (
    "person_id STRING, channel STRING, rule STRING, priority INT, tone STRING, format STRING, cta STRING, "
    "segment STRING, intent_score DOUBLE, session_id STRING, best_local_hour INT, failed_rules ARRAY<STRING>"
)


def _pick_batches(rules: ContentRules):
    """mapInArrow function: compile the triggers once per task, then pick per person and channel."""

    def pick(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        programs = compile_rules(rules)
        names = [name for name, _ in rules.variables]
        for batch in batches:
            out: list[dict] = []
            for row in batch.to_pylist():
                matched, failed = matching(programs, {name: row[name] for name in names})
                for channel in rules.channels:
                    rule = choose(matched, channel)
                    out.append({
                        "person_id": row["person_id"], "channel": channel, "rule": rule.name if rule else None,
                        "priority": rule.priority if rule else None, "tone": rule.tone if rule else None,
                        "format": rule.format if rule else None, "cta": rule.cta if rule else None,
                        "segment": row["segment"], "intent_score": row["intent_score"],
                        "session_id": row["session_id"], "best_local_hour": row["best_local_hour"],
                        "failed_rules": failed,
                    })  # fmt: skip
            yield pa.RecordBatch.from_pylist(out, schema=_arrow_output())

    return pick


def _arrow_output() -> pa.Schema:
    return pa.schema([
        ("person_id", pa.string()), ("channel", pa.string()), ("rule", pa.string()), ("priority", pa.int32()),
        ("tone", pa.string()), ("format", pa.string()), ("cta", pa.string()), ("segment", pa.string()),
        ("intent_score", pa.float64()), ("session_id", pa.string()), ("best_local_hour", pa.int32()),
        ("failed_rules", pa.list_(pa.string())),
    ])  # fmt: skip


@dataclass(frozen=True)
class ContentRun:
    persons: int
    picks: dict[str, dict[str, int]]  # channel -> rule -> persons
    unmatched: dict[str, int]  # channel -> persons no rule matched
    failures: dict[str, int]  # rule -> persons whose context the trigger could not evaluate
    merge: MergeCounts
    rules_version: str


def assign_content(
    spark: SparkSession, settings: Settings, rules: ContentRules | None = None, now: datetime | None = None
) -> ContentRun:
    """Evaluate the rules for every person in gold.user_segments and make gold.content_assignments match."""

    rules = rules or load_content_rules(settings.content_rules_file)
    ensure_tables(spark, settings)
    now = now or datetime.now(UTC)
    contexts = person_contexts(spark, settings, dict(rules.variables))
    picked = contexts.mapInArrow(_pick_batches(rules), _OUTPUT).localCheckpoint(eager=True)
    figures = picked.groupBy("channel", "rule").count().collect()
    one_row_per_person = picked.filter(F.col("channel") == F.lit(rules.channels[0]))
    failures = one_row_per_person.select(F.explode("failed_rules").alias("rule")).groupBy("rule").count().collect()
    assignments = (
        picked.filter(F.col("rule").isNotNull())
        .select(
            *[c for c in picked.columns if c != "failed_rules"],
            F.lit(rules.version).alias("rules_version"),
            F.lit(now).cast("timestamp").alias("evaluated_at"),
        )
        .select(*table_contract(TABLE).column_names)
    )
    # every person evaluated now, and everyone with a pick already: a person no longer in gold.user_segments
    # (erased) is a scope with no fresh rows, so the same MERGE deletes their picks
    stored = read_table(spark, settings, TABLE).select("person_id")
    scopes = one_row_per_person.select("person_id").unionByName(stored).distinct()
    counts = replace_scopes(spark, settings, TABLE, assignments, ("person_id", "channel"), "person_id",
                            scopes, unchanged_unless=("evaluated_at",))  # fmt: skip
    picks: dict[str, dict[str, int]] = {}
    unmatched: dict[str, int] = {}
    for r in figures:
        if r.rule is None:
            unmatched[r.channel] = r["count"]
        else:
            picks.setdefault(r.channel, {})[r.rule] = r["count"]
    return ContentRun(
        persons=one_row_per_person.count(),
        picks=picks,
        unmatched=unmatched,
        failures={r.rule: r["count"] for r in failures},
        merge=counts,
        rules_version=rules.version,
    )
