"""Intent models and their registry, ops.models.

Two kinds of model score sessions 0-100 with contributions that add up to the score:

- weighted: config/scoring.yaml's signals (`gold.scoring.score_sessions`);
- learned: a logistic regression trained by `intentlake train` (spark_jobs/gold/train.py). Its score is
  100 * P(purchase); `baseline` is the score of an average training session, and each feature gets its
  share of the distance from there, in proportion to its term in the log-odds.

Both are described completely by the JSON in ops.models.parameters, so a registered version scores the
same way wherever and whenever it is loaded. Exactly one version is champion: gold scores with it.

Status rules. A challenger becomes champion only through `promote`, which measures challenger and
champion on the same held-out days and refuses unless the challenger's AUC is ahead by the configured
margin; `rollback` restores the champion retired most recently. The weighted model is the config's: when
config/scoring.yaml names a version the registry has not seen, it is registered, as champion if the
champion is a weighted model (editing weights deploys them, from the next gold run on) and as a
challenger if a learned model is champion. Changing weights without a new model_version is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import InvalidConfigError, LearnedFeature, ScoringModel, Signal
from spark_jobs.contracts import read_table, table_contract
from spark_jobs.gold.scoring import score_sessions
from spark_jobs.settings import Settings

REGISTRY = "ops.models"
CHAMPION, CHALLENGER, RETIRED = "champion", "challenger", "retired"
BASELINE = "baseline"  # the contributions key of a learned model's starting point


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message says why and what would make it possible."""


class PromotionRefused(RegistryError):
    """The challenger did not beat the champion on the held-out days by the configured margin."""


# ---------------------------------------------------------------- scorers


@dataclass(frozen=True)
class WeightedScorer:
    model: ScoringModel
    kind = "weighted"

    @property
    def version(self) -> str:
        return self.model.model_version

    @property
    def features(self) -> list[str]:
        return [s.name for s in self.model.signals]

    def parameters(self) -> str:
        signals = {s.name: {"feature": s.feature, "transform": s.transform, "weight": s.weight, "cap": s.cap,
                            "equals": s.equals} for s in self.model.signals}  # fmt: skip
        return json.dumps({"signals": signals}, sort_keys=True)

    def score(self, sessions: DataFrame) -> DataFrame:

        return score_sessions(sessions, self.model)


@dataclass(frozen=True)
class Term:
    feature: LearnedFeature
    coefficient: float
    mean: float  # of the transformed value over the training sessions


def feature_value(feature: LearnedFeature) -> Column:
    """The transformed input of a learned model (nulls count as 0)."""
    column = F.col(feature.column)
    if feature.transform == "equals":
        return F.when(column == F.lit(feature.equals), 1.0).otherwise(0.0)
    value = F.coalesce(column.cast("double"), F.lit(0.0))
    if feature.transform == "log1p":
        return F.log1p(F.greatest(value, F.lit(0.0)))
    if feature.transform == "indicator":
        return F.when(value > 0, 1.0).otherwise(0.0)
    return value


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class LearnedScorer:
    version: str
    intercept: float
    terms: tuple[Term, ...]
    kind = "learned"

    @property
    def features(self) -> list[str]:
        return [t.feature.name for t in self.terms]

    @property
    def baseline_logit(self) -> float:
        return self.intercept + sum(t.coefficient * t.mean for t in self.terms)

    def parameters(self) -> str:
        terms = [{"column": t.feature.column, "transform": t.feature.transform, "equals": t.feature.equals,
                  "coefficient": t.coefficient, "mean": t.mean} for t in self.terms]  # fmt: skip
        return json.dumps({"algorithm": "logistic_regression", "intercept": self.intercept, "terms": terms},
                          sort_keys=True)  # fmt: skip

    def score(self, sessions: DataFrame) -> DataFrame:
        deltas = [F.lit(t.coefficient) * (feature_value(t.feature) - F.lit(t.mean)) for t in self.terms]
        names = [f"_d{i}" for i in range(len(self.terms))]
        base_logit = self.baseline_logit
        baseline = 100.0 * _sigmoid(base_logit)
        with_terms = sessions.select("*", *(d.alias(n) for d, n in zip(deltas, names, strict=True)))
        total = sum((F.col(n) for n in names), F.lit(0.0))
        score = F.lit(100.0) / (F.lit(1.0) + F.exp(-(F.lit(base_logit) + total)))
        with_terms = with_terms.withColumn("_total", total).withColumn("_score", score)
        distance = F.col("_score") - F.lit(baseline)

        def share(name: str) -> Column:
            return F.when(F.abs(F.col("_total")) > 1e-12, distance * F.col(name) / F.col("_total")).otherwise(0.0)

        parts = [F.lit(BASELINE), F.lit(round(baseline, 4))]
        for term, name in zip(self.terms, names, strict=True):
            parts += [F.lit(term.feature.name), F.round(share(name), 4)]
        return (
            with_terms.withColumn("contributions", F.create_map(*parts))
            .withColumn("intent_score", F.round(F.col("_score"), 4))
            .withColumn("model_version", F.lit(self.version))
            .drop(*names, "_total", "_score")
        )


Scorer = WeightedScorer | LearnedScorer


def scorer_from_row(row: Row) -> Scorer:
    """Rebuild a registered version from its parameters JSON."""
    params = json.loads(row.parameters)
    if row.kind == "weighted":
        signals = tuple(
            Signal(name, s["feature"], s["transform"], float(s["weight"]), s.get("cap"), s.get("equals"))
            for name, s in params["signals"].items()
        )
        # the order of signals does not change a score; keep the registry's (sorted) order
        return WeightedScorer(ScoringModel(row.model_version, signals))
    terms = tuple(
        Term(LearnedFeature(t["column"], t["transform"], t.get("equals")), float(t["coefficient"]), float(t["mean"]))
        for t in params["terms"]
    )
    return LearnedScorer(row.model_version, float(params["intercept"]), terms)


# ---------------------------------------------------------------- registry


def _table(spark: SparkSession, settings: Settings) -> DeltaTable:
    return DeltaTable.forPath(spark, str(settings.table_path(REGISTRY)))


def versions(spark: SparkSession, settings: Settings) -> list[Row]:
    """Every registered version, newest first."""
    frame = read_table(spark, settings, REGISTRY)
    return frame.orderBy(F.col("registered_at").desc(), F.col("model_version").desc()).collect()


def find(spark: SparkSession, settings: Settings, version: str) -> Row | None:
    return next((r for r in versions(spark, settings) if r.model_version == version), None)


def champion_row(spark: SparkSession, settings: Settings) -> Row | None:
    champions = [r for r in versions(spark, settings) if r.status == CHAMPION]
    if len(champions) > 1:  # only a hand edit of the table can do this; say so rather than pick one
        names = ", ".join(r.model_version for r in champions)
        raise RegistryError(f"ops.models has {len(champions)} champions ({names}); `intentlake models promote` one")
    return champions[0] if champions else None


@dataclass(frozen=True)
class Registration:
    scorer: Scorer
    status: str
    metrics: dict[str, float]
    training: tuple[date, date] | None = None
    holdout: tuple[date, date] | None = None
    compared_with: str | None = None
    note: str = ""


def register(
    spark: SparkSession, settings: Settings, entry: Registration, now: datetime | None = None, retire: str | None = None
) -> None:
    """Add a version (an existing version name is refused); with `retire`, that version is retired in the
    same commit (the new one then comes in as champion)."""
    if find(spark, settings, entry.scorer.version) is not None:
        raise RegistryError(f"model version {entry.scorer.version!r} is already registered")
    now = now or datetime.now(UTC)
    training = entry.training or (None, None)
    holdout = entry.holdout or (None, None)
    row = {
        "model_version": entry.scorer.version, "kind": entry.scorer.kind, "status": entry.status,
        "features": entry.scorer.features, "parameters": entry.scorer.parameters(),
        "training_start": training[0], "training_end": training[1],
        "holdout_start": holdout[0], "holdout_end": holdout[1],
        "metrics": {k: float(v) for k, v in entry.metrics.items()}, "compared_with": entry.compared_with,
        "registered_at": now, "promoted_at": now if entry.status == CHAMPION else None, "retired_at": None,
        "note": entry.note,
    }  # fmt: skip
    contract = table_contract(REGISTRY)
    source = spark.createDataFrame([row], contract.schema())
    if retire:
        source = source.unionByName(
            spark.createDataFrame([(retire,)], "model_version STRING").select(
                *(F.col(c) if c == "model_version" else F.lit(None).alias(c) for c in contract.column_names)
            ),
            allowMissingColumns=False,
        )
    stamp = F.lit(now).cast("timestamp")
    (
        _table(spark, settings)
        .alias("t")
        .merge(source.alias("s"), "t.model_version = s.model_version")
        .whenMatchedUpdate(
            condition="s.kind IS NULL",
            set={
                "status": F.lit(RETIRED),
                "retired_at": stamp,
                "note": F.lit(f"replaced by {entry.scorer.version}: {entry.note}"),
            },
        )
        .whenNotMatchedInsert(condition="s.kind IS NOT NULL", values={c: f"s.{c}" for c in contract.column_names})
        .execute()
    )


def _swap(spark: SparkSession, settings: Settings, new: str, old: str | None, note: str, now: datetime) -> None:
    """Make `new` the champion and retire `old`, in one commit."""
    rows = [(new, CHAMPION, note)] + ([(old, RETIRED, note)] if old else [])
    source = spark.createDataFrame(rows, "model_version STRING, status STRING, note STRING")
    stamp = F.lit(now).cast("timestamp")
    (
        _table(spark, settings)
        .alias("t")
        .merge(source.alias("s"), "t.model_version = s.model_version")
        .whenMatchedUpdate(
            set={
                "status": "s.status",
                "note": "s.note",
                "promoted_at": F.when(F.col("s.status") == CHAMPION, stamp).otherwise(F.col("t.promoted_at")),
                "retired_at": F.when(F.col("s.status") == RETIRED, stamp).otherwise(F.col("t.retired_at")),
            }
        )
        .execute()
    )


def check_config_version(spark: SparkSession, settings: Settings, weighted: ScoringModel) -> Row | None:
    """The registry's row for config/scoring.yaml's model_version (None if new); InvalidConfigError if that
    version is registered with other weights (read-only: run before anything moves)."""
    known = find(spark, settings, weighted.model_version)
    if known is not None and (
        known.kind != "weighted" or json.loads(known.parameters) != json.loads(WeightedScorer(weighted).parameters())
    ):
        other = "weights" if known.kind == "weighted" else "parameters (it is a learned model)"
        raise InvalidConfigError(
            settings.scoring_file, "model_version",
            f"{weighted.model_version!r} is registered in ops.models with other {other}; "
            "give changed weights a new model_version",
        )  # fmt: skip
    return known


def resolve_champion(
    spark: SparkSession, settings: Settings, weighted: ScoringModel, now: datetime | None = None
) -> Scorer:
    """The scorer gold uses, registering the config's weighted model first if it is new (module docstring)."""
    now = now or datetime.now(UTC)
    config_scorer = WeightedScorer(weighted)
    known = check_config_version(spark, settings, weighted)
    champion = champion_row(spark, settings)
    if known is None and (champion is None or champion.kind == "weighted"):
        retire = champion.model_version if champion else None
        entry = Registration(config_scorer, CHAMPION, {}, note="config/scoring.yaml")
        register(spark, settings, entry, now, retire=retire)
        return config_scorer
    if known is None:  # a learned model is champion: the config's new weights wait as a challenger
        entry = Registration(config_scorer, CHALLENGER, {}, note="config/scoring.yaml (a learned model is champion)")
        register(spark, settings, entry, now)
    if champion is None:  # only a hand edit of ops.models gets here
        raise RegistryError("ops.models has no champion; `intentlake models promote VERSION` one")
    return scorer_from_row(champion)


def promote(spark: SparkSession, settings: Settings, version: str, judged: tuple[float | None, float | None],
            margin: float, now: datetime | None = None) -> str:  # fmt: skip
    """Make `version` champion if its AUC (judged[0]) beats the champion's (judged[1]) on the same held-out
    days by `margin`; returns the retired champion's version. `train.promote_version` does the judging."""
    now = now or datetime.now(UTC)
    row = find(spark, settings, version)
    if row is None:
        raise RegistryError(f"no model version {version!r} in ops.models (`intentlake models list`)")
    champion = champion_row(spark, settings)
    if champion is not None and champion.model_version == version:
        raise RegistryError(f"{version} is already the champion")
    challenger_auc, champion_auc = judged
    if challenger_auc is None:
        raise PromotionRefused(f"{version} could not be measured (the held-out days have one class only)")
    if champion is not None and champion_auc is not None and challenger_auc < champion_auc + margin:
        raise PromotionRefused(
            f"{version} AUC {challenger_auc:.4f} does not beat champion {champion.model_version} AUC "
            f"{champion_auc:.4f} by the margin {margin:g} (config/models.yaml promotion.margin) on the same days"
        )
    old = champion.model_version if champion else None
    note = "promoted"
    if old and champion_auc is not None:
        note = f"promoted: AUC {challenger_auc:.4f} vs {old} {champion_auc:.4f}"
    _swap(spark, settings, version, old, note, now)
    return old or ""


def rollback(spark: SparkSession, settings: Settings, now: datetime | None = None) -> tuple[str, str]:
    """Restore the champion retired most recently; returns (restored, retired)."""
    now = now or datetime.now(UTC)
    champion = champion_row(spark, settings)
    former = [r for r in versions(spark, settings) if r.status != CHAMPION and r.promoted_at is not None
              and r.retired_at is not None]  # fmt: skip
    if champion is None or not former:
        raise RegistryError("nothing to roll back to: no version has been champion before the current one")
    previous = max(former, key=lambda r: (r.retired_at, r.promoted_at))
    _swap(spark, settings, previous.model_version, champion.model_version,
          f"rollback from {champion.model_version}", now)  # fmt: skip
    return previous.model_version, champion.model_version


def as_listing(rows: list[Row]) -> list[dict]:
    """What `intentlake models list` prints: no parameters, metrics rounded."""
    out = []
    for r in rows:
        out.append({
            "model_version": r.model_version, "kind": r.kind, "status": r.status,
            "auc": r.metrics.get("auc"), "baseline_auc": r.metrics.get("baseline_auc"),
            "compared_with": r.compared_with,
            "holdout": f"{r.holdout_start}..{r.holdout_end}" if r.holdout_start else None,
            "registered_at": r.registered_at.isoformat(timespec="seconds") if r.registered_at else None,
            "note": r.note,
        })  # fmt: skip
    return out
