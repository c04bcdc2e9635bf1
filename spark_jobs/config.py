"""Business configuration from config/: scoring weights and segment rules, validated before any run.

Every problem is reported as InvalidConfigError naming the file, the rule or signal, what is wrong and
what would be accepted. Segment rules are Spark SQL expressions, checked here by name (no Python eval,
no JVM-reflection functions) and by Spark's analyzer in `check_rules_compile` before data moves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from spark_jobs.bronze.vocabulary import vocabulary_beside
from spark_jobs.contracts import table_contract
from spark_jobs.errors import InvalidConfigError, read_yaml
from spark_jobs.silver.moments import MOMENT_TYPES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import StructType

TRANSFORMS = ("saturate", "indicator", "equals")
NUMERIC_TYPES = ("INT", "BIGINT", "DOUBLE", "FLOAT", "DECIMAL", "SMALLINT")
FORBIDDEN_FUNCTIONS = ("reflect", "java_method", "try_reflect")
_SQL_WORDS = {
    "and", "or", "not", "in", "is", "null", "true", "false", "between", "like", "rlike", "case", "when", "then",
    "else", "end", "as", "ilike", "div", "distinct",
}  # fmt: skip
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Signal:
    name: str
    feature: str
    transform: str
    weight: float
    cap: float | None = None
    equals: str | None = None


@dataclass(frozen=True)
class ScoringModel:
    model_version: str
    signals: tuple[Signal, ...]


@dataclass(frozen=True)
class SegmentRule:
    name: str
    when: str
    description: str = ""


def session_feature_types() -> dict[str, str]:
    return table_contract("silver.sessions").column_types


def read_mapping(path: Path, allowed: set[str], expected: str) -> dict:
    """A config file that must be a mapping with only `allowed` keys (`expected` says what it should hold)."""
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise InvalidConfigError(path, "file", f"expected a mapping with {expected}")
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidConfigError(path, ", ".join(map(str, unknown)), f"unknown key; allowed: {sorted(allowed)}")
    return doc


def load_scoring(path: Path) -> ScoringModel:
    """Read and check config/scoring.yaml."""
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise InvalidConfigError(path, "file", "expected a mapping with model_version and signals")
    version = doc.get("model_version")
    if not isinstance(version, str) or not version.strip():
        raise InvalidConfigError(path, "model_version", "must be a non-empty text such as 'weighted-v1'")
    raw_signals = doc.get("signals")
    if not isinstance(raw_signals, dict) or not raw_signals:
        raise InvalidConfigError(path, "signals", "must map signal names to {feature, transform, weight}")
    features = session_feature_types()
    signals = []
    for name, spec in raw_signals.items():
        where = f"signal '{name}'"
        if not isinstance(spec, dict):
            raise InvalidConfigError(path, where, "must be a mapping with feature, transform and weight")
        unknown = set(spec) - {"feature", "transform", "weight", "cap", "equals"}
        if unknown:
            raise InvalidConfigError(path, where, f"unknown keys {sorted(unknown)}; allowed: feature, transform, "
                                     "weight, cap, equals")  # fmt: skip
        feature = spec.get("feature")
        if feature not in features:
            raise InvalidConfigError(path, where, f"unknown feature {feature!r}; silver.sessions has "
                                     f"{sorted(features)}")  # fmt: skip
        transform = spec.get("transform")
        if transform not in TRANSFORMS:
            raise InvalidConfigError(path, where, f"transform {transform!r} is not one of {list(TRANSFORMS)}")
        weight = spec.get("weight")
        if not isinstance(weight, int | float) or isinstance(weight, bool) or not 0 <= weight <= 1:
            raise InvalidConfigError(path, where, f"weight {weight!r} must be a number between 0 and 1")
        if transform in ("saturate", "indicator") and features[feature] not in NUMERIC_TYPES:
            raise InvalidConfigError(path, where, f"transform {transform} needs a numeric feature; "
                                     f"{feature} is {features[feature]}")  # fmt: skip
        cap = spec.get("cap")
        if transform == "saturate" and (not isinstance(cap, int | float) or isinstance(cap, bool) or cap <= 0):
            raise InvalidConfigError(path, where, f"saturate needs a positive number 'cap', got {cap!r}")
        if transform == "equals" and "equals" not in spec:
            raise InvalidConfigError(path, where, "transform equals needs an 'equals' value")
        signals.append(Signal(name, feature, transform, float(weight), float(cap) if cap else None,
                              None if spec.get("equals") is None else str(spec["equals"])))  # fmt: skip
    total = sum(s.weight for s in signals)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise InvalidConfigError(path, "signals", f"weights add up to {total:g}; they must add up to 1")
    return ScoringModel(version.strip(), tuple(signals))


def referenced_names(expression: str) -> set[str]:
    """Bare identifiers in a SQL expression: string literals, function names and SQL words left out."""
    without_strings = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "''", expression)
    names = set()
    for match in _IDENTIFIER.finditer(without_strings):
        word = match.group(0)
        rest = without_strings[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _SQL_WORDS:
            continue
        if match.start() > 0 and without_strings[match.start() - 1].isdigit():
            continue  # e.g. 1e3, 10d
        names.add(word)
    return names


# silver.user_features columns a rule cannot use (keys, bookkeeping, histograms)
_NOT_RULE_INPUTS = {"person_id", "as_of_date", "feature_version", "first_seen", "engagement_by_hour",
                    "engagement_by_weekday"}  # fmt: skip


def rule_input_schema(custom: tuple[str, ...] = ()) -> StructType:
    """What a segment rule may refer to, typed: every silver.sessions column, intent_score, the count of each
    micro-moment type in the session (moments_<type>, e.g. moments_ad_fatigue), and the person's
    silver.user_features as of the session's UTC day (null where none was computed). Gold builds exactly
    these columns (`gold.scoring.segment_inputs`) and `check_rules_compile` checks rules against them.
    Needs a Spark session (the contracts' DDL is parsed by Spark); `rule_columns` gives the names without."""
    from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

    features = table_contract("silver.user_features").schema().fields
    return StructType([
        *table_contract("silver.sessions").schema().fields,
        StructField("intent_score", DoubleType()),
        *(StructField(f"moments_{kind}", IntegerType()) for kind in MOMENT_TYPES),
        *(StructField(column, IntegerType()) for column in custom),
        *(f for f in features if f.name not in _NOT_RULE_INPUTS),
    ])  # fmt: skip


def rule_columns(custom: tuple[str, ...] = ()) -> set[str]:
    """The names of `rule_input_schema`, read from the contracts without Spark (config loads before it).
    `custom`: the custom_<key> columns of config/event_vocabulary.yaml's custom_features."""

    features = table_contract("silver.user_features").column_names
    return {
        *table_contract("silver.sessions").column_names,
        "intent_score",
        *(f"moments_{kind}" for kind in MOMENT_TYPES),
        *custom,
        *(c for c in features if c not in _NOT_RULE_INPUTS),
    }


def load_segments(path: Path) -> tuple[SegmentRule, ...]:
    """Read and check config/segments.yaml (ordered rules, last one a catch-all)."""
    doc = read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("segments"), list) or not doc["segments"]:
        raise InvalidConfigError(path, "segments", "expected a non-empty list of {name, when} rules")
    allowed = rule_columns(_custom_columns(path))
    rules, seen = [], set()
    for i, spec in enumerate(doc["segments"], start=1):
        if not isinstance(spec, dict):
            raise InvalidConfigError(path, f"rule #{i}", "must be a mapping with name and when")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidConfigError(path, f"rule #{i}", "needs a non-empty name")
        where = f"rule '{name}'"
        if name in seen:
            raise InvalidConfigError(path, where, "is defined twice; segment names must be unique")
        seen.add(name)
        unknown_keys = set(spec) - {"name", "when", "description"}
        if unknown_keys:
            raise InvalidConfigError(path, where, f"unknown keys {sorted(unknown_keys)}; allowed: name, when, "
                                     "description")  # fmt: skip
        when = spec.get("when")
        if isinstance(when, bool):
            when = "true" if when else "false"
        if not isinstance(when, str) or not when.strip():
            raise InvalidConfigError(path, where, "needs a 'when' expression (Spark SQL, boolean)")
        lowered = when.lower()
        for fn in FORBIDDEN_FUNCTIONS:
            if re.search(rf"\b{fn}\s*\(", lowered):
                raise InvalidConfigError(path, where, f"function {fn}() is not allowed in rules")
        unknown = referenced_names(when) - allowed
        if unknown:
            raise InvalidConfigError(path, where, f"unknown feature(s) {sorted(unknown)} in {when!r}; "
                                     f"available: {sorted(allowed)}")  # fmt: skip
        rules.append(SegmentRule(name.strip(), when.strip(), str(spec.get("description", ""))))
    if rules[-1].when.lower() != "true":
        raise InvalidConfigError(path, f"rule '{rules[-1].name}'", "the last rule must be a catch-all "
                                 "(when: \"true\") so every session gets a segment")  # fmt: skip
    return tuple(rules)


def rule_condition(rule: SegmentRule):
    """The rule as a Spark Column. Parenthesised, so trailing text cannot parse as an alias ('a > 1 AND')."""
    from pyspark.sql import functions as F

    return F.expr(f"({rule.when})")


def check_rules_compile(spark: SparkSession, path: Path, rules: tuple[SegmentRule, ...]) -> None:
    """Let Spark's analyzer check each rule on an empty frame: it must parse, resolve and be boolean."""
    from pyspark.errors import AnalysisException, ParseException
    from pyspark.sql.types import BooleanType

    empty = spark.createDataFrame([], rule_input_schema(_custom_columns(path)))
    for rule in rules:
        try:
            data_type = empty.select(rule_condition(rule).alias("x")).schema["x"].dataType
        except (ParseException, AnalysisException) as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise InvalidConfigError(
                path, f"rule '{rule.name}'", f"Spark cannot use {rule.when!r}: {first_line}"
            ) from None
        if not isinstance(data_type, BooleanType):
            raise InvalidConfigError(path, f"rule '{rule.name}'", f"{rule.when!r} is {data_type.simpleString()}, "
                                     "not a boolean condition")  # fmt: skip


LEARNED_TRANSFORMS = ("log1p", "value", "indicator", "equals")
# Columns the purchase itself sets: a model reading them would learn the label, not intent.
LABEL_LEAKS = ("converted", "checkout_started", "session_phase", "drop_off_page")
_NOT_MODEL_INPUTS = {"session_id", "person_id", "anonymous_id", "user_id", "session_start", "session_end",
                     "is_closed", "updated_at", "session_date", "local_start", "intent_score"}  # fmt: skip


@dataclass(frozen=True)
class LearnedFeature:
    column: str
    transform: str
    equals: str | None = None

    @property
    def name(self) -> str:
        return self.column if self.transform != "equals" else f"{self.column}={self.equals}"


@dataclass(frozen=True)
class ModelsConfig:
    label: str
    features: tuple[LearnedFeature, ...]
    reg_param: float
    elastic_net_param: float
    max_iter: int
    window_days: int
    holdout_days: int
    min_rows: int
    min_holdout_rows: int
    margin: float
    score_threshold: float


def _number(path: Path, where: str, value: object, low: float, high: float, integer: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
    if not ok or (integer and not float(value).is_integer()):
        kind = "a whole number" if integer else "a number"
        raise InvalidConfigError(path, where, f"{value!r} must be {kind} between {low:g} and {high:g}")
    return float(value)


def _section(path: Path, doc: dict, name: str, allowed: set[str]) -> dict:
    section = doc.get(name)
    if not isinstance(section, dict):
        raise InvalidConfigError(path, name, f"must be a mapping with {sorted(allowed)}")
    unknown = sorted(set(section) - allowed)
    if unknown:
        keys = ", ".join(map(str, unknown))
        raise InvalidConfigError(path, f"{name}: {keys}", f"unknown key; allowed: {sorted(allowed)}")
    return section


def load_models(path: Path) -> ModelsConfig:
    """Read and check config/models.yaml (learned model features, training window, promotion margin)."""
    doc = read_mapping(path, {"learned", "training", "promotion"}, "learned, training and promotion")
    learned = _section(path, doc, "learned", {"algorithm", "label", "params", "features"})
    if learned.get("algorithm") != "logistic_regression":
        raise InvalidConfigError(path, "learned: algorithm", f"{learned.get('algorithm')!r} is not supported; "
                                 "use logistic_regression")  # fmt: skip
    if learned.get("label") != "converted":
        raise InvalidConfigError(path, "learned: label", f"{learned.get('label')!r}: the label must be converted "
                                 "(a purchase in the session)")  # fmt: skip
    params = learned.get("params") or {}
    if not isinstance(params, dict) or set(params) - {"reg_param", "elastic_net_param", "max_iter"}:
        raise InvalidConfigError(path, "learned: params", "allowed: reg_param, elastic_net_param, max_iter")
    types = _model_input_types(_custom_columns(path))
    raw = learned.get("features")
    if not isinstance(raw, list) or not raw:
        raise InvalidConfigError(path, "learned: features", "expected a non-empty list of {column, transform}")
    features, seen = [], set()
    for i, spec in enumerate(raw, start=1):
        where = f"learned feature #{i}"
        if not isinstance(spec, dict) or set(spec) - {"column", "transform", "equals"}:
            raise InvalidConfigError(path, where, "must be a mapping with column, transform (and equals)")
        column, transform = spec.get("column"), spec.get("transform")
        where = f"learned feature '{column}'"
        if column in LABEL_LEAKS:
            raise InvalidConfigError(path, where, f"{column} is set by the purchase itself (the label); a model "
                                     f"may not read {list(LABEL_LEAKS)}")  # fmt: skip
        if column not in types:
            raise InvalidConfigError(path, where, f"unknown feature; available: {sorted(types)}")
        if transform not in LEARNED_TRANSFORMS:
            raise InvalidConfigError(path, where, f"transform {transform!r} is not one of {list(LEARNED_TRANSFORMS)}")
        if transform != "equals" and types[column] not in NUMERIC_TYPES:
            raise InvalidConfigError(path, where, f"transform {transform} needs a numeric column; {column} is "
                                     f"{types[column]} (use equals)")  # fmt: skip
        if transform == "equals" and spec.get("equals") is None:
            raise InvalidConfigError(path, where, "transform equals needs an 'equals' value")
        feature = LearnedFeature(column, transform, None if transform != "equals" else str(spec["equals"]))
        if feature.name in seen:
            raise InvalidConfigError(path, where, "is listed twice")
        seen.add(feature.name)
        features.append(feature)
    training = _section(path, doc, "training", {"window_days", "holdout_days", "min_rows", "min_holdout_rows"})
    promotion = _section(path, doc, "promotion", {"metric", "margin", "score_threshold"})
    if promotion.get("metric", "auc") != "auc":
        raise InvalidConfigError(path, "promotion: metric", f"{promotion.get('metric')!r}: only auc is supported")
    window = int(_number(path, "training: window_days", training.get("window_days"), 2, 3650, integer=True))
    holdout = int(_number(path, "training: holdout_days", training.get("holdout_days"), 1, 365, integer=True))
    if holdout >= window:
        raise InvalidConfigError(path, "training: holdout_days", f"{holdout} leaves no training days in a "
                                 f"{window}-day window")  # fmt: skip
    return ModelsConfig(
        label="converted",
        features=tuple(features),
        reg_param=_number(path, "learned: params: reg_param", params.get("reg_param", 0.01), 0, 100),
        elastic_net_param=_number(
            path, "learned: params: elastic_net_param", params.get("elastic_net_param", 0.0), 0, 1
        ),
        max_iter=int(_number(path, "learned: params: max_iter", params.get("max_iter", 100), 1, 10_000, integer=True)),
        window_days=window,
        holdout_days=holdout,
        min_rows=int(_number(path, "training: min_rows", training.get("min_rows"), 1, 10**9, integer=True)),
        min_holdout_rows=int(
            _number(path, "training: min_holdout_rows", training.get("min_holdout_rows"), 1, 10**9, integer=True)
        ),
        margin=_number(path, "promotion: margin", promotion.get("margin"), 0, 1),
        score_threshold=_number(path, "promotion: score_threshold", promotion.get("score_threshold"), 0, 100),
    )


def _custom_columns(path: Path) -> tuple[str, ...]:
    """The custom_<key> inputs the vocabulary beside a config file defines."""
    return tuple(vocabulary_beside(path).feature_columns)


def _model_input_types(custom: tuple[str, ...] = ()) -> dict[str, str]:
    """Columns a learned model may read, with their contract types (rule inputs minus keys and times)."""

    types = dict(table_contract("silver.sessions").column_types)
    types.update({f"moments_{kind}": "INT" for kind in MOMENT_TYPES})
    types.update(dict.fromkeys(custom, "INT"))
    features = table_contract("silver.user_features").column_types
    types.update({c: t for c, t in features.items() if c not in _NOT_RULE_INPUTS})
    return {c: t for c, t in types.items() if c not in _NOT_MODEL_INPUTS}
