"""Intent accuracy against the simulator's ground truth (`intentlake evaluate`).

gold.session_scores is matched to the truth's sessions (truth/sessions.csv) by device and session start
and end (silver's boundaries agree with the truth's exactly on simulated data; sessions that do not match
are counted, not guessed). Reported, as aggregates only (no ids):

- AUC of intent_score for "the session converted" (the truth's purchase flag);
- precision and recall of the High Intent segment for the high_intent_buyer persona's sessions;
- the confusion of personas (rows) against segments (columns), in sessions.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.contracts import read_table
from spark_jobs.settings import Settings

HIGH_INTENT_SEGMENT, HIGH_INTENT_PERSONA = "High Intent", "high_intent_buyer"
_TIME = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"  # the truth file's timestamps


class MissingTruthError(FileNotFoundError):
    """No ground truth where the evaluation looked for it."""


@dataclass(frozen=True)
class Evaluation:
    scored_sessions: int
    matched_sessions: int
    auc_converted: float | None  # None when the matched sessions are all one class
    high_intent_precision: float | None
    high_intent_recall: float | None
    model_versions: list[str]
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)  # persona -> segment -> sessions

    def as_dict(self) -> dict:
        return asdict(self)


def _auc(matched: DataFrame) -> float | None:
    """Area under the ROC curve of intent_score for `bought` (MLlib's; ties handled as one threshold)."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    labelled = matched.select(F.col("intent_score").cast("double"), F.col("bought").cast("double").alias("label"))
    if labelled.select("label").distinct().count() < 2:
        return None
    evaluator = BinaryClassificationEvaluator(
        rawPredictionCol="intent_score", labelCol="label", metricName="areaUnderROC"
    )
    return evaluator.evaluate(labelled)


def evaluate(spark: SparkSession, settings: Settings, truth_dir: Path | None = None) -> Evaluation:
    """Compare gold's scores and segments with the simulator's truth for the same events."""
    truth_file = (truth_dir or settings.truth) / "sessions.csv"
    if not truth_file.exists():
        raise MissingTruthError(
            f"{truth_file}: no ground truth. `intentlake simulate` (or `make demo`) writes it beside the events it "
            "simulates; evaluate needs the truth of the events that are in the lakehouse."
        )
    with open(truth_file, newline="") as fh:
        truth_rows = [
            (r["anonymous_id"], r["start"], r["end"], r["persona"], r["converted"] == "True")
            for r in csv.DictReader(fh)
        ]
    truth = spark.createDataFrame(
        truth_rows, "anonymous_id STRING, start STRING, end STRING, persona STRING, bought BOOLEAN"
    )

    sessions = read_table(spark, settings, "silver.sessions").select(
        "session_id",
        "person_id",
        "anonymous_id",
        F.date_format("session_start", _TIME).alias("start"),
        F.date_format("session_end", _TIME).alias("end"),
    )
    scored = (
        read_table(spark, settings, "gold.session_scores")
        .select("session_id", "person_id", "intent_score", "segment", "model_version")
        .join(sessions, ["session_id", "person_id"])
    )
    matched = scored.join(truth, ["anonymous_id", "start", "end"]).select(
        "intent_score", "segment", "persona", "bought", "model_version"
    )
    matched = matched.localCheckpoint(eager=True)
    rows = matched.collect()
    flagged = [r for r in rows if r.segment == HIGH_INTENT_SEGMENT]
    buyers = [r for r in rows if r.persona == HIGH_INTENT_PERSONA]
    hits = sum(1 for r in flagged if r.persona == HIGH_INTENT_PERSONA)
    confusion: dict[str, dict[str, int]] = {}
    for r in rows:
        confusion.setdefault(r.persona, {}).setdefault(r.segment, 0)
        confusion[r.persona][r.segment] += 1
    return Evaluation(
        scored_sessions=scored.count(),
        matched_sessions=len(rows),
        auc_converted=_auc(matched),
        high_intent_precision=hits / len(flagged) if flagged else None,
        high_intent_recall=hits / len(buyers) if buyers else None,
        model_versions=sorted({r.model_version for r in rows}),
        confusion=confusion,
    )
