"""Daily KPIs (config/kpis.yaml) -> gold.kpis_daily, and the KPI report: one self-contained HTML file with
PNG plots embedded, the seeds' benchmarks drawn as target lines.

Every figure describes one UTC day D and is computed from the tables as they are, never from the wall
clock: sessions that started on D (silver.sessions), their micro-moments and scores, and each person's
segment at the end of D in event time (the segment of their latest session that ended before D + 1 in
gold.session_scores, which is how gold.user_segments picks it). A day is rewritten whole, so re-running D
replaces its rows. Only aggregates are written: no person, session or event id reaches the table or the
report.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from spark_jobs.config import InvalidConfigError, load_models, read_mapping
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.settings import REPO_ROOT, Settings

TABLE = "gold.kpis_daily"
KPIS_FILE = REPO_ROOT / "config" / "kpis.yaml"
_SECTIONS = {"micro_conversion", "intent_accuracy", "friction", "content_relevance", "report"}
NEW = "(new)"  # the "from" of a flow into a first segment


@dataclass(frozen=True)
class KpiConfig:
    micro_conversion_target: float
    micro_conversion_signals: tuple[str, ...]
    accuracy_target: float
    friction_improvement: float
    friction_baseline_days: int
    nps_target: float
    report_days: int
    version: str


def _section(path: Path, doc: dict, name: str, keys: set[str]) -> dict:
    section = doc.get(name)
    if not isinstance(section, dict) or set(section) != keys:
        raise InvalidConfigError(path, name, f"needs exactly the keys {sorted(keys)}")
    return section


def _fraction(path: Path, where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise InvalidConfigError(path, where, f"needs a fraction between 0 and 1 (0.15 for 15 %); got {value!r}")
    return float(value)


def _whole(path: Path, where: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidConfigError(path, where, f"needs a whole number from {low} to {high}; got {value!r}")
    return value


def load_kpi_config(path: Path = KPIS_FILE) -> KpiConfig:
    """Read and check config/kpis.yaml; every problem names the file and the key."""
    doc = read_mapping(path, _SECTIONS, f"the sections {sorted(_SECTIONS)}")
    missing = sorted(_SECTIONS - set(doc))
    if missing:
        raise InvalidConfigError(path, ", ".join(missing), "missing section")
    micro = _section(path, doc, "micro_conversion", {"target", "signals"})
    signals = micro["signals"]
    types = table_contract("silver.sessions").column_types
    if not isinstance(signals, list) or not signals:
        raise InvalidConfigError(path, "micro_conversion: signals", "needs a list of silver.sessions columns")
    for signal in signals:
        if types.get(signal) not in {"INT", "BIGINT", "DOUBLE", "BOOLEAN"}:
            raise InvalidConfigError(path, f"micro_conversion: signals: {signal!r}",
                                     "needs a numeric or boolean column of silver.sessions")  # fmt: skip
    friction = _section(path, doc, "friction", {"improvement", "baseline_days"})
    relevance = _section(path, doc, "content_relevance", {"nps_target"})
    nps = relevance["nps_target"]
    if isinstance(nps, bool) or not isinstance(nps, int | float) or not -100 <= nps <= 100:
        raise InvalidConfigError(path, "content_relevance: nps_target", f"an NPS is -100..100; got {nps!r}")
    return KpiConfig(
        micro_conversion_target=_fraction(path, "micro_conversion: target", micro["target"]),
        micro_conversion_signals=tuple(signals),
        accuracy_target=_fraction(path, "intent_accuracy: target",
                                  _section(path, doc, "intent_accuracy", {"target"})["target"]),
        friction_improvement=_fraction(path, "friction: improvement", friction["improvement"]),
        friction_baseline_days=_whole(path, "friction: baseline_days", friction["baseline_days"], 1, 366),
        nps_target=float(nps),
        report_days=_whole(path, "report: days", _section(path, doc, "report", {"days"})["days"], 1, 366),
        version=hashlib.sha256(path.read_bytes()).hexdigest()[:12],
    )  # fmt: skip


def _row(kpi: str, dimension: str, numerator: int, denominator: int, value: float | None = None,
         target: float | None = None, at_least: bool = True) -> dict[str, Any]:  # fmt: skip
    if value is None and denominator:
        value = numerator / denominator
    met = None if value is None or target is None else (value >= target if at_least else value <= target)
    return {"kpi": kpi, "dimension": dimension, "value": value, "numerator": int(numerator),
            "denominator": int(denominator), "target": target, "target_met": met}  # fmt: skip


def _abandonment(sessions: DataFrame, moments: DataFrame) -> tuple[int, int]:
    """(triggered closed sessions without a purchase, triggered closed sessions)."""
    triggered = sessions.join(moments.select("session_id").distinct(), "session_id", "left_semi")
    got = triggered.agg(F.count_if(~F.col("converted")).alias("n"), F.count(F.lit(1)).alias("d")).first()
    return int(got.n or 0), int(got.d or 0)


def compute_day(spark: SparkSession, settings: Settings, day: date, cfg: KpiConfig) -> list[dict[str, Any]]:
    """Every KPI row of day D (without kpi_date/as_of/config_version)."""
    threshold = load_models(settings.models_file).score_threshold
    start, end = datetime(day.year, day.month, day.day), datetime(day.year, day.month, day.day) + timedelta(days=1)
    signals = [c for c in cfg.micro_conversion_signals]
    types = table_contract("silver.sessions").column_types
    micro = F.lit(False)
    for column in signals:
        micro = micro | (F.col(column) if types[column] == "BOOLEAN" else F.col(column) > 0)

    silver = read_table(spark, settings, "silver.sessions")
    day_sessions = silver.where(F.col("session_date") == F.lit(day)).select(
        "session_id", "person_id", "is_closed", "converted", "local_hour", "engaged_seconds", micro.alias("micro")
    ).localCheckpoint()  # fmt: skip
    closed = day_sessions.where("is_closed")
    # a session that started on D can have moments detected up to a max session length later
    moments = (
        read_table(spark, settings, "silver.micro_moments")
        .where(F.col("moment_date").between(F.lit(day), F.lit(day + timedelta(days=1))))
        .select("session_id", "moment_type")
        .distinct()
        .join(day_sessions.select("session_id"), "session_id", "left_semi")
        .localCheckpoint()
    )
    rows: list[dict[str, Any]] = []

    # micro-conversion: triggered closed sessions that micro-converted
    got = closed.join(moments.select("session_id").distinct(), "session_id", "left_semi").agg(
        F.count_if("micro").alias("n"), F.count(F.lit(1)).alias("d")).first()  # fmt: skip
    rows.append(_row("micro_conversion_rate", "all", got.n or 0, got.d or 0, target=cfg.micro_conversion_target))

    # intent accuracy: score >= threshold against the purchase, on the day's closed scored sessions
    scored = (
        read_table(spark, settings, "gold.session_scores")
        .where((F.col("session_date") == F.lit(day)) & F.col("is_closed"))
        .select("session_id", (F.col("intent_score") >= threshold).alias("predicted"))
        .join(closed.select("session_id", "converted"), "session_id")
    )
    m = scored.agg(
        F.count_if(F.col("predicted") & F.col("converted")).alias("tp"),
        F.count_if(F.col("predicted") & ~F.col("converted")).alias("fp"),
        F.count_if(~F.col("predicted") & F.col("converted")).alias("fn"),
        F.count_if(~F.col("predicted") & ~F.col("converted")).alias("tn"),
    ).first()
    tp, fp, fn, tn = (int(v or 0) for v in (m.tp, m.fp, m.fn, m.tn))
    rows.append(_row("intent_accuracy", "all", tp + tn, tp + fp + fn + tn, target=cfg.accuracy_target))
    rows.append(_row("intent_precision", "all", tp, tp + fp))
    rows.append(_row("intent_recall", "all", tp, tp + fn))

    # friction: abandonment at trigger points, against (1 - improvement) x the baseline days' rate
    base_start = day - timedelta(days=cfg.friction_baseline_days)
    baseline_sessions = silver.where(F.col("session_date").between(F.lit(base_start), F.lit(day - timedelta(days=1))))
    baseline_sessions = baseline_sessions.where("is_closed").select("session_id", "converted")
    baseline_moments = read_table(spark, settings, "silver.micro_moments").where(
        F.col("moment_date").between(F.lit(base_start), F.lit(day)))  # fmt: skip
    base_n, base_d = _abandonment(baseline_sessions, baseline_moments)
    target = (base_n / base_d) * (1 - cfg.friction_improvement) if base_d else None
    n, d = _abandonment(closed, moments)
    rows.append(_row("trigger_abandonment", "all", n, d, target=target, at_least=False))
    by_type = closed.join(moments, "session_id").groupBy("moment_type").agg(
        F.count_if(~F.col("converted")).alias("n"), F.count(F.lit(1)).alias("d"))  # fmt: skip
    rows += [_row("trigger_abandonment", r.moment_type, r.n, r.d) for r in by_type.orderBy("moment_type").collect()]

    # segments at the end of D and the moves during D, in event time
    scores = read_table(spark, settings, "gold.session_scores").where(F.col("session_end") < F.lit(end))
    latest = Window.partitionBy("person_id").orderBy(F.col("session_end").desc(), F.col("session_id").desc())
    now = scores.withColumn("_n", F.row_number().over(latest)).where("_n = 1")
    before = (
        scores.where(F.col("session_end") < F.lit(start)).withColumn("_n", F.row_number().over(latest)).where("_n = 1")
    )
    sizes = now.groupBy("segment").count().orderBy("segment").collect()
    rows += [_row("segment_size", r.segment, r["count"], r["count"], value=float(r["count"])) for r in sizes]
    moved = (
        now.where(F.col("session_end") >= F.lit(start))
        .select("person_id", F.col("segment").alias("to"))
        .join(before.select("person_id", F.col("segment").alias("from")), "person_id", "left")
        .where(F.col("from").isNull() | (F.col("from") != F.col("to")))
        .groupBy(F.coalesce("from", F.lit(NEW)).alias("from"), "to")
        .count()
        .orderBy("from", "to")
        .collect()
    )
    rows += [_row("segment_flow", f"{r['from']}>{r['to']}", r["count"], r["count"], value=float(r["count"]))
             for r in moved]  # fmt: skip

    # engagement by local hour of the session start (unknown zone: 'unknown')
    hours = (
        day_sessions.groupBy(
            F.coalesce(F.lpad(F.col("local_hour").cast("string"), 2, "0"), F.lit("unknown")).alias("h")
        )
        .agg(F.count(F.lit(1)).alias("n"), F.avg("engaged_seconds").alias("engaged"))
        .orderBy("h")
        .collect()
    )
    rows += [_row("engagement_by_hour", r.h, r.n, r.n, value=float(r.engaged)) for r in hours]
    return rows


@dataclass(frozen=True)
class KpiRun:
    day: date
    rows: int
    version: int
    figures: dict[str, float | None]


def run_kpis(
    spark: SparkSession, settings: Settings, day: date, as_of: datetime, cfg: KpiConfig | None = None
) -> KpiRun:
    """Compute day D's KPIs and replace D's rows of gold.kpis_daily in one commit."""
    from delta.tables import DeltaTable

    cfg = cfg or load_kpi_config(settings.kpis_file)
    ensure_tables(spark, settings, (TABLE, "silver.sessions", "silver.micro_moments", "gold.session_scores"))
    rows = compute_day(spark, settings, day, cfg)
    full = [{"kpi_date": day, **r, "as_of": as_of.replace(tzinfo=None) if as_of.tzinfo else as_of,
             "config_version": cfg.version} for r in rows]  # fmt: skip
    schema = table_contract(TABLE).schema()
    frame = spark.createDataFrame([tuple(r[f.name] for f in schema.fields) for r in full], schema)
    path = str(settings.table_path(TABLE))
    where = f"kpi_date = DATE'{day.isoformat()}'"
    frame.write.format("delta").mode("overwrite").option("replaceWhere", where).save(path)
    version = int(DeltaTable.forPath(spark, path).history(1).first().version)
    figures = {r["kpi"]: r["value"] for r in rows if r["dimension"] == "all"}
    return KpiRun(day, len(rows), version, figures)


# ---------------------------------------------------------------- the report

_TITLES = {
    "micro_conversion_rate": "Micro-conversion rate",
    "intent_accuracy": "Intent signal accuracy",
    "trigger_abandonment": "Abandonment at trigger points (friction)",
}


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _plots(history: Any, today: Any, cfg: KpiConfig) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images: dict[str, bytes] = {}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, kpi in zip(axes, _TITLES, strict=True):
        series = history[(history.kpi == kpi) & (history.dimension == "all")].sort_values("kpi_date")
        slots = range(len(series))  # day i sits at x = i, one tick per reported day
        ax.plot(slots, 100 * series.value, marker="o", color="#1f5fa8", label="measured")
        if series.target.notna().any():
            # Each day's target spans its whole slot (i - 0.5 .. i + 0.5) rather than joining day points: a single
            # day still gets a line (one point draws nothing), and friction's target, which moves with its
            # baseline, shows as steps. A day without a target leaves a gap.
            edges = [x for i in slots for x in (i - 0.5, i + 0.5)]
            levels = [100 * t for t in series.target for _ in range(2)]
            ax.plot(edges, levels, linestyle="--", color="#c0392b", label="target (seeds)")
        ax.set_xticks(list(slots), [d.strftime("%m-%d") for d in series.kpi_date])
        ax.set_xlim(-0.5, max(len(series), 1) - 0.5)
        ax.set_title(_TITLES[kpi], fontsize=10)
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        ax.legend(fontsize=7, loc="lower left")
    images["trends"] = _png(fig)

    sizes = today[today.kpi == "segment_size"].sort_values("numerator")
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.barh(sizes.dimension, sizes.numerator, color="#2e8b57")
    ax.set_title("Persons per segment at the end of the day", fontsize=10)
    ax.set_xlabel("persons")
    images["segments"] = _png(fig)

    triggers = today[(today.kpi == "trigger_abandonment") & (today.dimension != "all")].sort_values("dimension")
    overall = today[(today.kpi == "trigger_abandonment") & (today.dimension == "all")]
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(triggers.dimension, 100 * triggers.value.fillna(0), color="#d9822b")
    target = overall.target.iloc[0] if len(overall) else None
    if target is not None and target == target:  # not NaN
        ax.axhline(100 * target, linestyle="--", color="#c0392b",
                   label=f"target: {cfg.friction_improvement:.0%} below baseline")  # fmt: skip
        ax.legend(fontsize=7)
    ax.set_title("Sessions abandoned after each trigger", fontsize=10)
    ax.set_ylabel("% without a purchase")
    ax.set_ylim(0, 100)
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    images["abandonment"] = _png(fig)

    hours = today[(today.kpi == "engagement_by_hour") & (today.dimension != "unknown")].sort_values("dimension")
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(hours.dimension.astype(int), hours.numerator, color="#6c5ce7", label="sessions")
    ax.set_xlabel("local hour of the session start")
    ax.set_ylabel("sessions")
    ax.set_xticks(range(0, 24, 2))
    twin = ax.twinx()
    twin.plot(hours.dimension.astype(int), hours.value, color="#222", marker=".", label="mean engaged seconds")
    twin.set_ylabel("engaged seconds")
    ax.set_title("Engagement by local hour", fontsize=10)
    images["engagement"] = _png(fig)
    return images


def render_report(spark: SparkSession, settings: Settings, day: date, out_dir: Path,
                  data_docs: Path | None = None, cfg: KpiConfig | None = None) -> Path:  # fmt: skip
    """Write <out_dir>/kpi_report_<day>.html from gold.kpis_daily (the day and the trend days before it)."""
    cfg = cfg or load_kpi_config(settings.kpis_file)
    first = day - timedelta(days=cfg.report_days - 1)
    history = read_table(spark, settings, TABLE).where(F.col("kpi_date").between(F.lit(first), F.lit(day))).toPandas()
    today = history[history.kpi_date == day]
    if today.empty:
        raise ValueError(f"gold.kpis_daily has no rows for {day}: run the KPIs for that day first")
    images = _plots(history, today, cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"kpi_report_{day.isoformat()}.html"
    path.write_text(_html(day, today, images, cfg, path, data_docs))
    return path


def _html(day: date, today: Any, images: dict[str, bytes], cfg: KpiConfig, path: Path, docs: Path | None) -> str:
    def figure(name: str, alt: str) -> str:
        data = base64.b64encode(images[name]).decode()
        return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'

    def first(kpi: str) -> Any:
        hit = today[(today.kpi == kpi) & (today.dimension == "all")]
        return hit.iloc[0] if len(hit) else None

    cards = []
    baseline = f"{cfg.friction_improvement:.0%} below the {cfg.friction_baseline_days}-day baseline"
    goals = (("micro_conversion_rate", f"> {cfg.micro_conversion_target:.0%}"),
             ("intent_accuracy", f"> {cfg.accuracy_target:.0%}"), ("trigger_abandonment", baseline))  # fmt: skip
    for kpi, goal in goals:
        row = first(kpi)
        value = None if row is None or row.value != row.value else float(row.value)
        target = None if row is None or row.target != row.target else float(row.target)
        flag = None if row is None else row.target_met
        met = None if flag is None or flag != flag else bool(flag)
        status = {True: "met", False: "missed", None: "no target"}[met]
        n, d = (0, 0) if row is None else (int(row.numerator), int(row.denominator))
        cards.append(
            f'<tr class="{status.replace(" ", "-")}"><td>{_TITLES[kpi]}</td><td>{_percent(value)}</td>'
            f"<td>{n} / {d}</td><td>{html.escape(goal)} ({_percent(target)})</td><td>{status}</td></tr>"
        )
    for kpi, label in (("intent_precision", "Intent precision"), ("intent_recall", "Intent recall")):
        row = first(kpi)
        value = None if row is None or row.value != row.value else float(row.value)
        n, d = (0, 0) if row is None else (int(row.numerator), int(row.denominator))
        cards.append(f"<tr><td>{label}</td><td>{_percent(value)}</td><td>{n} / {d}</td><td>-</td><td>-</td></tr>")
    cards.append(
        f"<tr class='not-measured'><td>Content relevance (NPS)</td><td>not measured</td><td>-</td>"
        f"<td>NPS &ge; {cfg.nps_target:g}</td><td>needs feedback events (not collected yet)</td></tr>"
    )
    flows = today[today.kpi == "segment_flow"].sort_values("numerator", ascending=False).head(15)
    flow_rows = (
        "".join(
            "<tr>" + "".join(f"<td>{html.escape(part)}</td>" for part in flow.split(">", 1)) + f"<td>{int(n)}</td></tr>"
            for flow, n in zip(flows.dimension, flows.numerator, strict=True)
        )
        or "<tr><td colspan=3>no person changed segment</td></tr>"
    )
    docs_link = ""
    if docs is not None and docs.exists():
        import os

        href = os.path.relpath(docs, path.parent)
        docs_link = (
            f'<p>Data quality: <a href="{html.escape(href)}">Great Expectations Data Docs</a>'
            " (counts only, no row values).</p>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>intentlake KPIs {day}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1200px; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
tr.met td:last-child {{ color: #1b7f3b; font-weight: bold; }}
tr.missed td:last-child {{ color: #b3261e; font-weight: bold; }}
tr.not-measured {{ color: #777; }} figure {{ display: inline-block; margin: .5rem; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>intentlake KPIs for {day} (UTC)</h1>
<p>From gold.kpis_daily (config/kpis.yaml version {cfg.version}). Targets are the seeds' benchmarks.</p>
<table><tr><th>KPI</th><th>value</th><th>count</th><th>target</th><th>status</th></tr>{"".join(cards)}</table>
<h2>Trends over {cfg.report_days} days</h2>{figure("trends", "KPI trends with target lines")}
<h2>Segments</h2>{figure("segments", "segment sizes")}
<table><tr><th>from</th><th>to</th><th>persons</th></tr>{flow_rows}</table>
<h2>Friction and engagement</h2>{figure("abandonment", "abandonment at trigger points")}
{figure("engagement", "engagement by local hour")}
{docs_link}
<p><small>Sessions are those that started on the day (UTC); rates use closed sessions. Segments are each person's at
the end of the day in event time. Aggregates only: no person appears in this report.</small></p>
</body></html>
"""
