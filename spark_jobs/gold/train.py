"""`intentlake train`: fit the learned intent model on point-in-time features and register it as a challenger.

Examples are closed silver.sessions (a session still open has no final label). Their inputs are what
gold scores with (`gold.scoring.segment_inputs`): the session's own features, its micro-moment counts and
the person's silver.user_features as of the session's UTC day, which summarise sessions that ended before
that day, so nothing computed after a session began reaches its example. The label is `converted`.

The window is the last `window_days` calendar days that end on the newest day with closed sessions; its
last `holdout_days` are held out. The model is fitted on the days before, then the new model and the
champion are both measured on the held-out days (AUC, precision and recall at the score threshold, Brier
score, calibration error), and the new version is registered with both figures. `promote_version`
measures again on the challenger's held-out days, so a promotion always compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.config import ModelsConfig, load_models, load_scoring
from spark_jobs.contracts import read_table
from spark_jobs.gold import models
from spark_jobs.gold.models import CHALLENGER, LearnedScorer, Scorer, Term, feature_value
from spark_jobs.gold.scoring import segment_inputs
from spark_jobs.settings import Settings

CALIBRATION_BINS = 10


class TrainingError(RuntimeError):
    """Training cannot run on the data there is; the message says what is missing."""


@dataclass(frozen=True)
class Metrics:
    rows: int
    positives: int
    auc: float | None
    precision: float | None  # of score >= threshold, for a purchase
    recall: float | None
    brier: float
    calibration_error: float  # expected calibration error over CALIBRATION_BINS equal-width bins of score/100

    def as_map(self, prefix: str = "") -> dict[str, float]:
        values = {
            "rows": self.rows, "positives": self.positives, "auc": self.auc, "precision_at_threshold": self.precision,
            "recall_at_threshold": self.recall, "brier": self.brier, "calibration_error": self.calibration_error,
        }  # fmt: skip
        return {f"{prefix}{k}": float(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class TrainResult:
    version: str
    training: tuple[date, date]
    holdout: tuple[date, date]
    training_rows: int
    challenger: Metrics
    champion: Metrics
    champion_version: str


def examples(spark: SparkSession, settings: Settings, first: date, last: date) -> DataFrame:
    """Closed sessions whose day is in [first, last], with every input a model may read and `label`."""

    sessions = read_table(spark, settings, "silver.sessions").filter(
        F.col("is_closed") & F.col("session_date").between(F.lit(first), F.lit(last))
    )
    return segment_inputs(spark, settings, sessions).withColumn("label", F.col("converted").cast("double"))


def measure(scored: DataFrame, threshold: float) -> Metrics:
    """Metrics of intent_score (0-100) for `label` on already scored examples."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    frame = scored.select(F.col("intent_score").cast("double").alias("score"), "label").localCheckpoint(eager=True)
    p, y = F.col("score") / 100.0, F.col("label")
    flagged = F.col("score") >= threshold
    bin_of = F.least(F.floor(p * CALIBRATION_BINS), F.lit(CALIBRATION_BINS - 1))
    totals = frame.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(y).alias("positives"),
        F.sum(F.when(flagged, 1).otherwise(0)).alias("flagged"),
        F.sum(F.when(flagged, y).otherwise(0.0)).alias("hits"),
        F.avg((p - y) * (p - y)).alias("brier"),
    ).first()
    rows, positives = int(totals.rows), int(totals.positives or 0)
    if rows == 0:
        raise TrainingError("no closed sessions to measure on")
    bins = frame.groupBy(bin_of.alias("bin")).agg(
        F.count(F.lit(1)).alias("n"), F.avg(p).alias("p"), F.avg(y).alias("y")
    )
    ece = sum(b.n / rows * abs(b.p - b.y) for b in bins.collect())
    auc = None
    if 0 < positives < rows:
        evaluator = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="label", metricName="areaUnderROC")
        auc = evaluator.evaluate(frame)
    hits = float(totals.hits or 0)
    return Metrics(
        rows=rows,
        positives=positives,
        auc=auc,
        precision=hits / totals.flagged if totals.flagged else None,
        recall=hits / positives if positives else None,
        brier=float(totals.brier),
        calibration_error=ece,
    )


def judge(scorer: Scorer, data: DataFrame, threshold: float) -> Metrics:
    return measure(scorer.score(data), threshold)


def windows(
    spark: SparkSession, settings: Settings, cfg: ModelsConfig, until: date | None = None
) -> tuple[tuple[date, date], tuple[date, date]]:
    """(training days, held-out days). The held-out days are the newest `holdout_days` days with closed
    sessions, widened back a day at a time until they hold `min_holdout_rows` sessions (the newest UTC day
    is often a sliver of the world's evening); training takes the days of the window before them."""
    per_day = (
        read_table(spark, settings, "silver.sessions")
        .filter(F.col("is_closed") & (F.col("session_date") <= F.lit(until or date.max)))
        .groupBy("session_date")
        .count()
        .orderBy(F.col("session_date").desc())
        .collect()
    )
    if not per_day:
        raise TrainingError("silver.sessions has no closed sessions: run the pipeline (bronze, silver) first")
    newest = per_day[0].session_date
    window_start = newest - timedelta(days=cfg.window_days - 1)
    held, rows = [], 0
    for day in per_day:
        if len(held) >= cfg.holdout_days and rows >= cfg.min_holdout_rows:
            break
        held.append(day.session_date)
        rows += day["count"]
    holdout_start = min(held)
    if holdout_start <= window_start or len(held) == len(per_day):
        raise TrainingError(
            f"holding out {rows} sessions ({holdout_start}..{newest}, config/models.yaml training.holdout_days "
            f"{cfg.holdout_days}, min_holdout_rows {cfg.min_holdout_rows}) leaves no earlier day to train on"
        )
    return (window_start, holdout_start - timedelta(days=1)), (holdout_start, newest)


def fit(data: DataFrame, cfg: ModelsConfig, version: str) -> LearnedScorer:
    """Fit MLlib's logistic regression on the examples; coefficients are in the inputs' own units."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    names = [f"_x{i}" for i in range(len(cfg.features))]
    inputs = data.select(*(feature_value(f).alias(n) for f, n in zip(cfg.features, names, strict=True)), "label")
    inputs = inputs.localCheckpoint(eager=True)
    means = inputs.agg(*(F.avg(n).alias(n) for n in names)).first()
    assembled = VectorAssembler(inputCols=names, outputCol="features").transform(inputs)
    regression = LogisticRegression(
        featuresCol="features",
        labelCol="label",
        regParam=cfg.reg_param,
        elasticNetParam=cfg.elastic_net_param,
        maxIter=cfg.max_iter,
        standardization=True,
    )
    fitted = regression.fit(assembled)
    terms = tuple(
        Term(f, float(c), float(means[n] or 0.0))
        for f, c, n in zip(cfg.features, fitted.coefficients.toArray(), names, strict=True)
    )
    return LearnedScorer(version, float(fitted.intercept), terms)


def _registered(row) -> TrainResult:
    """A version trained before (a retried task): its result as the registry recorded it."""
    m = row.metrics

    def metrics(prefix: str) -> Metrics:
        return Metrics(int(m.get(f"{prefix}rows", 0)), int(m.get(f"{prefix}positives", 0)), m.get(f"{prefix}auc"),
                       m.get(f"{prefix}precision_at_threshold"), m.get(f"{prefix}recall_at_threshold"),
                       m.get(f"{prefix}brier", 0.0), m.get(f"{prefix}calibration_error", 0.0))  # fmt: skip

    training, holdout = (row.training_start, row.training_end), (row.holdout_start, row.holdout_end)
    rows = int(m.get("training_rows", 0))
    return TrainResult(row.model_version, training, holdout, rows, metrics(""), metrics("baseline_"), row.compared_with)


def train(
    spark: SparkSession, settings: Settings, now: datetime | None = None, until: date | None = None
) -> TrainResult:
    """Fit, measure against the champion on the held-out days, and register the new version as a challenger.

    now names the version (learned-lr-<now>); until bounds the data (sessions up to that day). A scheduler
    passes both from its run's data interval, so a retried run finds its version registered and returns it.
    """
    now = now or datetime.now(UTC)
    version = f"learned-lr-{now.strftime('%Y%m%d%H%M%S')}"
    existing = models.find(spark, settings, version)
    if existing is not None:
        return _registered(existing)
    cfg = load_models(settings.models_file)
    champion = models.resolve_champion(spark, settings, load_scoring(settings.scoring_file), now)
    training, holdout = windows(spark, settings, cfg, until)
    train_set = examples(spark, settings, *training).localCheckpoint(eager=True)
    counts = train_set.agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("pos")).first()
    n, pos = int(counts.n), int(counts.pos or 0)
    if n < cfg.min_rows:
        raise TrainingError(
            f"{n} closed sessions from {training[0]} to {training[1]} (before the held-out days {holdout[0]}.."
            f"{holdout[1]}); training needs at least {cfg.min_rows} (config/models.yaml training.min_rows)"
        )
    if pos == 0 or pos == n:
        raise TrainingError(f"the {n} training sessions from {training[0]} to {training[1]} are all one class "
                            f"({pos} converted); a model needs both")  # fmt: skip
    learned = fit(train_set, cfg, version)
    held_out = examples(spark, settings, *holdout).localCheckpoint(eager=True)
    mine, theirs = judge(learned, held_out, cfg.score_threshold), judge(champion, held_out, cfg.score_threshold)
    metrics = {**mine.as_map(), **theirs.as_map("baseline_"), "training_rows": n, "training_positives": pos}
    entry = models.Registration(learned, CHALLENGER, metrics, training, holdout, champion.version,
                                note=f"trained on {n} sessions")  # fmt: skip
    models.register(spark, settings, entry, now)
    train_set.unpersist()
    return TrainResult(version, training, holdout, n, mine, theirs, champion.version)


def promote_version(spark: SparkSession, settings: Settings, version: str, now: datetime | None = None) -> str:
    """Measure `version` and the champion on `version`'s held-out days (or the latest ones) and promote
    if it is ahead by the margin; returns the version it replaced. Raises models.PromotionRefused."""
    cfg = load_models(settings.models_file)
    row = models.find(spark, settings, version)
    if row is None:
        raise models.RegistryError(f"no model version {version!r} in ops.models (`intentlake models list`)")
    champion_row = models.champion_row(spark, settings)
    holdout = (row.holdout_start, row.holdout_end) if row.holdout_start else windows(spark, settings, cfg)[1]
    data = examples(spark, settings, *holdout).localCheckpoint(eager=True)
    challenger = judge(models.scorer_from_row(row), data, cfg.score_threshold)
    champion_auc = None
    if champion_row is not None:
        champion_auc = judge(models.scorer_from_row(champion_row), data, cfg.score_threshold).auc
    return models.promote(spark, settings, version, (challenger.auc, champion_auc), cfg.margin, now)
