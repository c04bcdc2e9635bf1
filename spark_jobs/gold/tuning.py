"""`tune_signals`: propose new signal weights and score thresholds from recent outcomes, as a reviewed change.

Nothing in config/ is touched. `propose` reads the closed sessions of a fixed window (config/models.yaml
training.window_days, ending the day before `until`; never "now") with their outcome (`converted`) and the
inputs gold's segment rules read (`train.examples`), and writes a proposal for a person to review:

- weights: the signals, transforms and caps of config/scoring.yaml stay; their weights come from a
  logistic regression of `converted` on the signals' 0..1 values (Spark MLlib, coefficients bounded below by
  0, L2 regParam and maxIter of config/models.yaml learned.params). Weight = coefficient / sum of
  coefficients, rounded to WEIGHT_DECIMALS by largest remainder so they add up to exactly 1. The weighted
  score is then an increasing linear function of the fitted log-odds, so it ranks sessions as the fit does.
  model_version becomes <current, without an earlier -tuned-<date>>-tuned-<until>, a new registry version.
- thresholds, all whole numbers 1..99 on the proposed score: config/models.yaml promotion.score_threshold
  is the t that maximises F1 of `score >= t` for `converted` over the window's sessions; a segment rule
  whose condition is a top-level AND with one plain lower bound `intent_score >= N` (or `> N`) gets the t
  that maximises F1 of "the session lands in that segment" for `converted` (the earlier rules and the
  rule's other conditions applied as gold applies them). Ties go to the t nearest the current value, then
  the higher t. Other uses of intent_score (an upper bound, inside OR or NOT) are left as they are and
  the proposal says why.
- figures: AUC, precision and recall at the threshold (`train.measure`) of the current weights and
  threshold and of the proposed ones, on the same window. Both come from the window the weights were
  fitted on, so the proposed figures are in-sample (optimistic); `retrain_intent_model` is the held-out
  comparison.

Scores are recomputed here with both weight sets rather than read from gold.session_scores: that table holds
only the champion's score (possibly a learned model's) and only its latest version.

Written to `out_dir` (default <lakehouse>/proposals/tune_signals/<until>/): scoring.yaml, segments.yaml and
models.yaml (the full proposed files, comments kept), proposal.diff (a unified diff against the current
files, `git apply`-able from the repository root) and proposal.json (window, rows, positives, method,
weights, thresholds, figures). The proposed files pass the same loaders gold uses before anything is
written. Too little data (fewer closed sessions than training.min_rows, or fewer than MIN_POSITIVES
converted or not converted sessions) raises TuningRefused and writes nothing. The same `until` on the same
data writes byte-identical files.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.config import (
    InvalidConfigError,
    ModelsConfig,
    ScoringModel,
    SegmentRule,
    check_rules_compile,
    load_models,
    load_scoring,
    load_segments,
)
from spark_jobs.gold import models
from spark_jobs.gold.scoring import assign_segments, score_sessions, signal_value
from spark_jobs.gold.train import examples, measure
from spark_jobs.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from spark_jobs.gold.train import Metrics

MIN_POSITIVES = 20  # converted sessions (and not converted ones) a window needs before weights are fitted
WEIGHT_DECIMALS = 3
THRESHOLDS = range(1, 100)  # candidate whole-number thresholds on the 0-100 score
FILES = ("scoring.yaml", "segments.yaml", "models.yaml", "proposal.diff", "proposal.json")
_TUNED = re.compile(r"-tuned-\d{4}-\d{2}-\d{2}$")
_LOWER_BOUND = re.compile(r"^intent_score\s*(>=|>)\s*(\d+(?:\.\d+)?)$", re.IGNORECASE)
_SCORE = re.compile(r"\bintent_score\b", re.IGNORECASE)
_READS = ("silver.sessions", "silver.micro_moments", "silver.user_features")
HOW_TO_APPLY = (
    "Review proposal.diff and the figures in proposal.json. To apply: from the repository root run "
    "`git apply <this folder>/proposal.diff` (or copy scoring.yaml, segments.yaml and models.yaml over "
    "config/), check with `intentlake validate-config`, and commit; the next gold run registers the new "
    "model_version in ops.models and rescores with it (as champion when a weighted model is champion, else "
    "as a challenger). To discard: do nothing (or delete the folder)."
)


class TuningRefused(RuntimeError):
    """No proposal: the window holds too little data to tune on; the message says what is missing."""


@dataclass(frozen=True)
class Threshold:
    """A whole-number threshold t and how `score >= t` (within the sessions it applies to) did for converted."""

    value: int
    flagged: int
    hits: int
    positives: int

    @property
    def precision(self) -> float | None:
        return self.hits / self.flagged if self.flagged else None

    @property
    def recall(self) -> float | None:
        return self.hits / self.positives if self.positives else None

    @property
    def f1(self) -> Fraction:
        total = self.flagged + self.positives
        return Fraction(2 * self.hits, total) if total else Fraction(0)


@dataclass(frozen=True)
class RuleChange:
    """One segment rule that reads intent_score: what it says now, what is proposed (or why it is left)."""

    name: str
    current: str
    proposed: str
    tuned: bool
    why: str
    current_bound: float | None = None
    proposed_bound: int | None = None
    current_fit: dict[str, Any] = field(default_factory=dict)  # sessions, precision, recall, f1 for converted
    proposed_fit: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Proposal:
    until: date
    window: tuple[date, date]
    rows: int
    positives: int
    current: ScoringModel
    proposed: ScoringModel
    score_threshold: tuple[float, int]  # (current, proposed)
    current_metrics: Metrics
    proposed_metrics: Metrics
    rules: tuple[RuleChange, ...]
    out_dir: Path
    changed: tuple[str, ...]  # the config files the proposal changes

    def summary(self) -> dict[str, Any]:
        """A small XCom / CLI summary: where the files are and the headline figures (no row data)."""

        def figures(m: Metrics, threshold: float) -> dict[str, Any]:
            return {"auc": _round(m.auc), "precision": _round(m.precision), "recall": _round(m.recall),
                    "threshold": threshold}  # fmt: skip

        return {
            "status": "proposed",
            "until": self.until.isoformat(),
            "window": [self.window[0].isoformat(), self.window[1].isoformat()],
            "rows": self.rows,
            "positives": self.positives,
            "out_dir": str(self.out_dir),
            "files": [str(self.out_dir / name) for name in FILES],
            "changes": list(self.changed),
            "model_version": [self.current.model_version, self.proposed.model_version],
            "current": figures(self.current_metrics, self.score_threshold[0]),
            "proposed": figures(self.proposed_metrics, self.score_threshold[1]),
        }


# ---------------------------------------------------------------- pure parts (no Spark)


def window_for(until: date, cfg: ModelsConfig) -> tuple[date, date]:
    """The training window of config/models.yaml ending the day before `until`."""
    last = until - timedelta(days=1)
    return last - timedelta(days=cfg.window_days - 1), last


def tuned_version(current: str, until: date) -> str:
    """weighted-v1 -> weighted-v1-tuned-2026-11-07; an earlier -tuned-<date> suffix is replaced, not stacked."""
    return f"{_TUNED.sub('', current)}-tuned-{until.isoformat()}"


def rounded_weights(raw: list[float], decimals: int = WEIGHT_DECIMALS) -> list[int]:
    """Non-negative `raw` scaled to sum to 10**decimals in whole units (largest remainder; ties to the first)."""
    total, unit = sum(raw), 10**decimals
    if total <= 0 or any(w < 0 for w in raw):
        raise ValueError(f"weights must be non-negative with a positive sum, got {raw}")
    exact = [w / total * unit for w in raw]
    units = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(raw)), key=lambda i: (-(exact[i] - units[i]), i))
    for i in by_remainder[: unit - sum(units)]:
        units[i] += 1
    return units


def weight_text(units: int, decimals: int = WEIGHT_DECIMALS) -> str:
    """250 -> '0.25', 0 -> '0.0', 1000 -> '1.0' (as YAML reads back the same float)."""
    text = f"{units / 10**decimals:.{decimals}f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def best_threshold(buckets: dict[int, tuple[int, int]], positives: int, current: float) -> Threshold | None:
    """The whole-number t in THRESHOLDS maximising F1 of `score >= t` for converted, from sessions counted by
    floor(score) (bucket -> (sessions, converted)); `positives` counts every converted session, including
    those the rule can never flag. Ties: nearest `current`, then the higher t. None if nothing converted."""
    if positives <= 0:
        return None
    best: tuple | None = None
    for t in THRESHOLDS:
        flagged = sum(n for b, (n, _) in buckets.items() if b >= t)
        hits = sum(p for b, (_, p) in buckets.items() if b >= t)
        candidate = Threshold(t, flagged, hits, positives)
        key = (candidate.f1, -abs(t - current), t)
        if best is None or key > best[0]:
            best = (key, candidate)
    return best[1] if best else None


def _mask(text: str) -> str:
    """`text` with quoted strings and parenthesised parts blanked (same length): what is left is top level."""
    out, depth, quote = [], 0, ""
    for ch in text:
        if quote:
            out.append(" ")
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
            out.append(" ")
        elif ch == "(":
            depth += 1
            out.append(" ")
        elif ch == ")":
            depth -= 1
            out.append(" ")
        else:
            out.append(ch if depth == 0 else " ")
    return "".join(out)


def score_bound(when: str) -> tuple[list[str], str, float] | str:
    """(the other top-level conditions, the bound's conjunct, N) when `when` is a top-level AND with exactly
    one plain lower bound `intent_score >= N` (or `> N`) and no other use of intent_score; else why not."""
    masked = _mask(when)
    if re.search(r"\bor\b", masked, re.IGNORECASE) or re.search(r"\bbetween\b", masked, re.IGNORECASE):
        return "intent_score is combined with OR or BETWEEN at the top level; left as it is"
    cuts = [m.span() for m in re.finditer(r"\band\b", masked, re.IGNORECASE)]
    starts = [0, *(end for _, end in cuts)]
    ends = [*(start for start, _ in cuts), len(when)]
    conjuncts = [when[s:e].strip() for s, e in zip(starts, ends, strict=True)]
    with_score = [c for c in conjuncts if _SCORE.search(c)]
    if len(with_score) != 1:
        return f"intent_score appears in {len(with_score)} top-level conditions; left as it is"
    match = _LOWER_BOUND.match(with_score[0])
    if match is None:
        return (f"{with_score[0]!r} is not a plain lower bound (intent_score >= N); only lower bounds are fitted "
                "to purchases, left as it is")  # fmt: skip
    return [c for c in conjuncts if c is not with_score[0]], with_score[0], float(match.group(2))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def render_scoring(text: str, version: str, weights: dict[str, str]) -> str:
    """config/scoring.yaml's text with model_version and each signal's weight replaced, all else kept."""
    lines, signal, in_signals = [], None, False
    for line in text.splitlines(keepends=True):
        if re.match(r"^model_version:", line):
            line = f"model_version: {version}\n"
        elif re.match(r"^signals:\s*(#.*)?$", line):
            in_signals = True
        elif re.match(r"^\S", line) and not line.startswith("#"):
            in_signals = False
        elif in_signals and (m := re.match(r"^  (\w+):\s*(#.*)?$", line)):
            signal = m.group(1)
        elif in_signals and signal in weights and (m := re.match(r"^(\s{4,}weight:\s*)([^\s#]+)(.*)$", line, re.S)):
            if _as_float(m.group(2)) != float(weights[signal]):  # 0.10 stays 0.10 when the weight is 0.1
                line = f"{m.group(1)}{weights[signal]}{m.group(3)}"
        lines.append(line)
    return "".join(lines)


def render_segments(text: str, changes: dict[str, tuple[str, str]]) -> str:
    """config/segments.yaml's text with each named rule's `when` replaced (rule -> (old, new))."""
    lines, rule = [], None
    for line in text.splitlines(keepends=True):
        if m := re.match(r"^\s*-\s+name:\s*(.+?)\s*$", line):
            rule = m.group(1).strip("\"'")
        elif rule in changes and re.match(r"^\s+when:", line):
            old, new = changes[rule]
            line = line.replace(old, new, 1)
        lines.append(line)
    return "".join(lines)


def render_models(text: str, threshold: int) -> str:
    """config/models.yaml's text with promotion.score_threshold replaced."""
    pattern = re.compile(r"^(\s+score_threshold:\s*)([^\s#]+)", re.MULTILINE)
    return pattern.sub(lambda m: f"{m.group(1)}{threshold}", text, count=1)


def unified_diff(current: str, proposed: str, label: str) -> str:
    """A `git apply`-able diff of one file (empty when unchanged)."""
    body = "".join(difflib.unified_diff(current.splitlines(keepends=True), proposed.splitlines(keepends=True),
                                        fromfile=f"a/{label}", tofile=f"b/{label}"))  # fmt: skip
    return f"diff --git a/{label} b/{label}\n{body}" if body else ""


def _label(path: Path) -> str:
    """The file's path from the repository root (config/<name> for a config dir elsewhere)."""
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return f"config/{path.name}"


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _write(path: Path, text: str) -> None:
    """Replace `path` atomically (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- Spark parts


def _fit_weights(data: DataFrame, model: ScoringModel, cfg: ModelsConfig) -> tuple[list[float], float]:
    """Non-negative logistic regression of label on the signals' 0..1 values: (coefficients, intercept)."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.linalg import Matrices

    names = [f"_s{i}" for i in range(len(model.signals))]
    inputs = data.select(*(signal_value(s).alias(n) for s, n in zip(model.signals, names, strict=True)), "label")
    # one partition: the gradient sums then add up in one fixed order, so the same data gives the same weights
    # bit for bit (a weekly fit of a few signals over weeks of sessions is small work for one task)
    assembled = VectorAssembler(inputCols=names, outputCol="features").transform(inputs).coalesce(1)
    regression = LogisticRegression(
        featuresCol="features",
        labelCol="label",
        family="binomial",
        regParam=cfg.reg_param,
        elasticNetParam=0.0,  # bound-constrained fitting (L-BFGS-B) supports L2 only
        maxIter=cfg.max_iter,
        standardization=True,
        lowerBoundsOnCoefficients=Matrices.dense(1, len(names), [0.0] * len(names)),
    )
    fitted = regression.fit(assembled)
    return [max(float(c), 0.0) for c in fitted.coefficients.toArray()], float(fitted.intercept)


def _buckets(scored: DataFrame, where: Column) -> dict[int, tuple[int, int]]:
    """floor(intent_score) -> (sessions, converted) over the sessions where `where` holds."""
    from pyspark.sql import functions as F

    rows = (
        scored.filter(where)
        .groupBy(F.floor("intent_score").cast("int").alias("b"))
        .agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("p"))
        .collect()
    )
    return {int(r.b): (int(r.n), int(r.p or 0)) for r in rows}


def _holds(expression: str) -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(F.expr(f"({expression})"), F.lit(False))  # a null condition does not match


def _segment_fit(scored: DataFrame, rules: tuple[SegmentRule, ...], positives: int) -> dict[str, dict[str, Any]]:
    """Per segment: its sessions and how well "in this segment" finds converted sessions."""
    from pyspark.sql import functions as F

    counts = (
        assign_segments(scored, rules).groupBy("segment").agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("p"))
    )
    found = {row.segment: (int(row.n), int(row.p or 0)) for row in counts.collect()}
    fits = {}
    for rule in rules:
        n, p = found.get(rule.name, (0, 0))
        t = Threshold(0, n, p, positives)
        fits[rule.name] = {"sessions": n, "converted": p, "precision": _round(t.precision),
                           "recall": _round(t.recall), "f1": _round(float(t.f1))}  # fmt: skip
    return fits


def _tune_rules(scored: DataFrame, rules: tuple[SegmentRule, ...], positives: int) -> list[tuple[RuleChange, str]]:
    """Each rule that reads intent_score, in order, with its proposed condition (earlier rules as proposed)."""
    from pyspark.sql import functions as F

    done: list[tuple[RuleChange, str]] = []
    earlier: list[str] = []  # proposed conditions of the rules before this one
    for rule in rules:
        proposed_when = rule.when
        if _SCORE.search(rule.when):
            parsed = score_bound(rule.when)
            if isinstance(parsed, str):
                done.append((RuleChange(rule.name, rule.when, rule.when, False, parsed), rule.when))
            else:
                others, conjunct, bound = parsed
                reaches = F.lit(True)
                for condition in earlier:
                    reaches = reaches & ~_holds(condition)
                if others:
                    reaches = reaches & _holds(" AND ".join(f"({c})" for c in others))
                choice = best_threshold(_buckets(scored, reaches), positives, bound)
                if choice is None:
                    why = "no converted session in the window; left as it is"
                    done.append((RuleChange(rule.name, rule.when, rule.when, False, why, bound), rule.when))
                else:
                    proposed_when = rule.when.replace(conjunct, f"intent_score >= {choice.value}", 1)
                    why = ("lower bound with the best F1 of 'lands in this segment' for converted, earlier rules "
                           "and the rule's other conditions applied")  # fmt: skip
                    done.append((RuleChange(rule.name, rule.when, proposed_when, True, why, bound, choice.value),
                                 proposed_when))  # fmt: skip
        earlier.append(proposed_when)
    return done


def _champion(spark: SparkSession, settings: Settings) -> dict[str, Any] | None:

    if not (settings.table_path(models.REGISTRY) / "_delta_log").is_dir():
        return None
    row = models.champion_row(spark, settings)
    return {"model_version": row.model_version, "kind": row.kind} if row else None


def _validate(spark: SparkSession, settings: Settings, texts: dict[str, str], expect: dict[str, Any]) -> None:
    """Load the proposed files with the loaders gold uses and check they say what was meant."""

    with tempfile.TemporaryDirectory(prefix="tune-signals-") as tmp:
        paths = {name: Path(tmp) / name for name in texts}
        for name, text in texts.items():
            paths[name].write_text(text)
        scoring = load_scoring(paths["scoring.yaml"])
        rules = load_segments(paths["segments.yaml"])
        check_rules_compile(spark, paths["segments.yaml"], rules)
        cfg = load_models(paths["models.yaml"])
    weights = {s.name: s.weight for s in scoring.signals}
    whens = {r.name: r.when for r in rules}
    if (scoring.model_version, weights) != (expect["version"], expect["weights"]) or any(
        whens.get(name) != when for name, when in expect["rules"].items()
    ) or cfg.score_threshold != expect["threshold"]:  # fmt: skip
        raise RuntimeError(
            "tune_signals could not rewrite config/ by line (an unusual layout?); no proposal written. Edit the "
            f"files by hand with: {json.dumps(expect, sort_keys=True)}"
        )
    if (settings.table_path(models.REGISTRY) / "_delta_log").is_dir():
        try:
            models.check_config_version(spark, settings, scoring)
        except InvalidConfigError as exc:
            raise TuningRefused(
                f"the proposed {scoring.model_version} is already in ops.models: {exc.problem}"
            ) from None


def propose(spark: SparkSession, settings: Settings, until: date, out_dir: Path | None = None) -> Proposal:
    """Propose weights and thresholds from the window before `until` and write them to `out_dir` (module
    docstring); config/ is only read. Raises TuningRefused (nothing written) when the data is too thin."""
    from pyspark.sql import functions as F

    current = load_scoring(settings.scoring_file)
    rules = load_segments(settings.segments_file)
    cfg = load_models(settings.models_file)
    first, last = window_for(until, cfg)
    missing = [t for t in _READS if not (settings.table_path(t) / "_delta_log").is_dir()]
    if missing:
        raise TuningRefused(f"no {', '.join(missing)} under {settings.lakehouse}: run the pipeline first")
    data = examples(spark, settings, first, last).filter(F.col("label").isNotNull()).localCheckpoint(eager=True)
    totals = data.agg(F.count(F.lit(1)).alias("n"), F.sum("label").alias("p")).first()
    rows, positives = int(totals.n), int(totals.p or 0)
    where = f"closed sessions from {first} to {last} (config/models.yaml training.window_days {cfg.window_days})"
    if rows < cfg.min_rows:
        raise TuningRefused(f"{rows} {where}; tuning needs at least {cfg.min_rows} (training.min_rows)")
    if min(positives, rows - positives) < MIN_POSITIVES:
        raise TuningRefused(f"{positives} converted and {rows - positives} not converted among the {rows} {where}; "
                            f"tuning needs at least {MIN_POSITIVES} of each")  # fmt: skip

    coefficients, intercept = _fit_weights(data, current, cfg)
    if sum(coefficients) <= 0:
        raise TuningRefused(f"no signal of config/scoring.yaml raises the odds of a purchase in the {rows} {where}")
    units = rounded_weights(coefficients)
    texts = {s.name: weight_text(u) for s, u in zip(current.signals, units, strict=True)}
    proposed = ScoringModel(
        tuned_version(current.model_version, until),
        tuple(replace(s, weight=float(texts[s.name])) for s in current.signals),
    )

    now_scored, new_scored = score_sessions(data, current), score_sessions(data, proposed)  # cheap from `data`
    threshold = best_threshold(_buckets(new_scored, F.lit(True)), positives, cfg.score_threshold)
    assert threshold is not None  # positives >= MIN_POSITIVES
    tuned = _tune_rules(new_scored, rules, positives)
    proposed_rules = tuple(replace(r, when=next((w for c, w in tuned if c.name == r.name), r.when)) for r in rules)
    now_fit = _segment_fit(now_scored, rules, positives)
    new_fit = _segment_fit(new_scored, proposed_rules, positives)
    changes = tuple(replace(c, current_fit=now_fit[c.name], proposed_fit=new_fit[c.name]) for c, _ in tuned)
    now_metrics = measure(now_scored, cfg.score_threshold)
    new_metrics = measure(new_scored, threshold.value)

    sources = {"scoring.yaml": settings.scoring_file, "segments.yaml": settings.segments_file,
               "models.yaml": settings.models_file}  # fmt: skip
    before = {name: path.read_text() for name, path in sources.items()}
    after = {
        "scoring.yaml": render_scoring(before["scoring.yaml"], proposed.model_version, texts),
        "segments.yaml": render_segments(
            before["segments.yaml"], {c.name: (c.current, c.proposed) for c in changes if c.tuned}
        ),
        "models.yaml": render_models(before["models.yaml"], threshold.value),
    }
    expect = {"version": proposed.model_version, "weights": {s.name: s.weight for s in proposed.signals},
              "rules": {c.name: c.proposed for c in changes}, "threshold": float(threshold.value)}  # fmt: skip
    _validate(spark, settings, after, expect)
    changed = tuple(_label(sources[n]) for n in sources if after[n] != before[n])
    diff = "".join(unified_diff(before[n], after[n], _label(sources[n])) for n in sources)

    out_dir = out_dir or settings.lakehouse / "proposals" / "tune_signals" / until.isoformat()
    result = Proposal(until, (first, last), rows, positives, current, proposed,
                      (cfg.score_threshold, threshold.value), now_metrics, new_metrics, tuple(changes), out_dir,
                      changed)  # fmt: skip
    sizes = {name: {"current": now_fit[name]["sessions"], "proposed": new_fit[name]["sessions"]} for name in now_fit}
    report = _report(result, coefficients, intercept, sizes, _champion(spark, settings))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in after.items():
        _write(out_dir / name, text)
    _write(out_dir / "proposal.diff", diff)
    _write(out_dir / "proposal.json", json.dumps(report, indent=2, sort_keys=True) + "\n")  # last: complete
    data.unpersist()
    return result


def _report(p: Proposal, coefficients: list[float], intercept: float,
            sizes: dict[str, dict[str, int]], champion: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """proposal.json: everything a reviewer needs, aggregates only (no session ids or rows)."""

    def metrics(m: Metrics) -> dict[str, float | int | None]:
        return {k: int(v) if k in ("rows", "positives") else _round(v) for k, v in m.as_map().items()}

    notes = ["Figures are in-sample: the weights and thresholds were chosen on the same window."]
    if champion and champion["kind"] != "weighted":
        notes.append(f"The champion is the learned model {champion['model_version']}: applied, the proposed weighted "
                     "model registers as a challenger and the segment thresholds would apply to the learned "
                     "model's score, not to the score they were fitted on.")  # fmt: skip
    return {
        "until": p.until.isoformat(),
        "window": {
            "first": p.window[0].isoformat(),
            "last": p.window[1].isoformat(),
            "days": (p.window[1] - p.window[0]).days + 1,
        },
        "rows": p.rows,
        "positives": p.positives,
        "champion": champion,
        "method": {
            "weights": "non-negative logistic regression (Spark MLlib, lowerBoundsOnCoefficients 0, L2 regParam and "
            "maxIter of config/models.yaml) of converted on the signals' 0..1 values; weight = coefficient / sum, "
            f"rounded to {WEIGHT_DECIMALS} decimals by largest remainder (sum exactly 1)",
            "score_threshold": "whole number 1..99 maximising F1 of score >= t for converted over the window",
            "segments": "rules with one plain lower bound intent_score >= N in a top-level AND: the whole number "
            "maximising F1 of 'lands in this segment' for converted (earlier rules applied); ties: nearest the "
            "current value, then the higher",
        },
        "current": {
            "model_version": p.current.model_version,
            "weights": {s.name: s.weight for s in p.current.signals},
            "score_threshold": p.score_threshold[0],
            "metrics": metrics(p.current_metrics),
        },
        "proposed": {
            "model_version": p.proposed.model_version,
            "weights": {s.name: s.weight for s in p.proposed.signals},
            "score_threshold": p.score_threshold[1],
            "metrics": metrics(p.proposed_metrics),
        },
        "fit": {
            "intercept": _round(intercept),
            "coefficients": {s.name: _round(c) for s, c in zip(p.current.signals, coefficients, strict=True)},
        },
        "segments": [
            {
                "rule": c.name,
                "tuned": c.tuned,
                "why": c.why,
                "current": c.current,
                "proposed": c.proposed,
                "current_fit": c.current_fit,
                "proposed_fit": c.proposed_fit,
            }
            for c in p.rules
        ],
        "segment_sessions": sizes,
        "changes": list(p.changed),
        "notes": notes,
        "how_to_apply": HOW_TO_APPLY,
    }
