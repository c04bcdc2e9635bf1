"""`intentlake`: the one command-line entry point (demo, simulate, run, sql, status, replay-quarantine,
features, train, models, evaluate, send-times, content-picks, kpis, erase, tune, undo-merge, validate-config)."""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_jobs.settings import TABLES, Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

LAYERS = ("bronze", "silver", "gold")


def _spark(settings: Settings) -> SparkSession:
    from spark_jobs.contracts import ensure_tables
    from spark_jobs.spark import build_spark

    spark = build_spark(settings)
    ensure_tables(spark, settings)
    return spark


def _run_layer(spark: SparkSession, settings: Settings, layer: str, trigger: str | None, source: str = "files") -> None:
    from spark_jobs.bronze import job as bronze
    from spark_jobs.gold import scoring as gold
    from spark_jobs.silver import job as silver

    if layer == "bronze":
        bronze.run(spark, settings, trigger, source=source)
    else:
        {"silver": silver.run, "gold": gold.run}[layer](spark, settings, trigger)


def simulator_defaults() -> dict[str, Any]:
    """simulate()'s keyword defaults: the one place the simulator's knobs are set."""
    from spark_jobs.simulate import simulate

    return {n: p.default for n, p in inspect.signature(simulate).parameters.items() if p.default is not p.empty}


def _simulate(settings: Settings, sink: str = "files", **knobs: Any) -> None:
    """Simulate into the landing zone, or into an outbox that is then published to Kafka."""
    from spark_jobs.simulate import simulate

    t0 = time.monotonic()
    to_kafka = sink == "kafka"
    # For Kafka the files are an outbox: written, published line by line, then removed.
    target = settings.lakehouse / "_outbox" if to_kafka else settings.landing
    summary = simulate(target, settings.truth, **knobs)
    print(
        f"simulated {summary.events:,} events from {summary.users:,} users in {summary.sessions:,} sessions "
        f"({summary.lines:,} lines: +{summary.duplicates:,} duplicates, {summary.malformed:,} malformed; "
        f"{summary.late:,} late) into {summary.files} files in {time.monotonic() - t0:.1f}s"
    )
    if to_kafka:
        from spark_jobs.kafka import publish_files
        from spark_jobs.spark import build_spark

        files = sorted(target.glob("events-*.ndjson"))
        published = publish_files(build_spark(settings), settings, files)
        shutil.rmtree(target)
        print(f"  published {published:,} records to {settings.kafka_topic} at {settings.kafka_bootstrap}")
    else:
        print(f"  landing: {summary.landing}")
    print(f"  truth:   {summary.truth}")


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    _simulate(settings, args.sink, **{name: getattr(args, name) for name in simulator_defaults()})
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError

    layers = LAYERS if args.layer == "all" else (args.layer,)
    if args.trigger and args.trigger != "availableNow" and len(layers) > 1:
        print("a processing-time trigger runs one layer until stopped; name the layer", file=sys.stderr)
        return 2
    spark = _spark(settings)
    try:
        if "gold" in layers:  # a bad config must stop the run before any layer moves data
            from spark_jobs.gold.scoring import load_config

            load_config(spark, settings)
        for layer in layers:
            t0 = time.monotonic()
            _run_layer(spark, settings, layer, args.trigger, args.source)
            print(f"{layer}: done in {time.monotonic() - t0:.1f}s")
    except InvalidConfigError as exc:
        print(f"config error, nothing ran: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    spark = _spark(settings)
    result = spark.sql(args.query)
    if args.format == "csv":
        print(result.limit(args.limit).toPandas().to_csv(index=False), end="")
    else:
        result.show(args.limit, truncate=args.truncate)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    spark = _spark(settings)
    print("tables:")
    for name in TABLES:
        print(f"  {name:<22} {spark.table(name).count():>10,} rows   {settings.table_path(name)}")
    latest = spark.sql(
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY job ORDER BY started_at DESC, batch_id DESC) AS n "
        "FROM ops.pipeline_runs) WHERE n = 1 ORDER BY job"
    ).collect()
    print("streams (latest batch of each job in ops.pipeline_runs):" if latest else "streams: no batch has run yet")
    for r in latest:
        print(
            f"  {r.job:<18} batch {r.batch_id:<5} at {r.started_at:%Y-%m-%d %H:%M:%S} UTC "
            f"{r.duration_ms / 1000:6.1f}s  in {r.input_rows:,} = accepted {r.accepted_rows:,} "
            f"+ quarantined {r.quarantined_rows:,} + duplicates {r.duplicate_rows:,}"
        )
        if r.quarantine_reasons:
            print(
                "      quarantined by reason: "
                + ", ".join(f"{k} {v:,}" for k, v in sorted(r.quarantine_reasons.items()))
            )
        if r.watermark or r.max_event_time:
            late = r.late_rows or 0
            print(f"      watermark {r.watermark or '-'}   newest event {r.max_event_time or '-'}   late {late:,}")
        if r.source_offsets:
            shown = sorted(r.source_offsets.items())
            more = f" (+{len(shown) - 4} more)" if len(shown) > 4 else ""
            print("      read: " + ", ".join(f"{k} {v}" for k, v in shown[:4]) + more)
        if r.quality_status:
            failing = ", ".join(f"{k} ({len(v)})" for k, v in sorted((r.quality_failures or {}).items()))
            print(f"      quality gate: {r.quality_status}" + (f"; failing: {failing}" if failing else ""))
    return 0


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_replay_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.bronze.replay import Selection, replay_quarantine

    selection = Selection(
        reasons=tuple(args.reason or ()),
        since=_utc(args.since) if args.since else None,
        until=_utc(args.until) if args.until else None,
        ingest_batch=args.ingest_batch,
        event_ids=tuple(args.event_id or ()),
    )
    result = replay_quarantine(_spark(settings), settings, selection, dry_run=args.dry_run)
    print(("dry run, nothing written: " if args.dry_run else "") + result.summary())
    return 0


def cmd_validate_config(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError, check_rules_compile, load_models, load_scoring, load_segments
    from spark_jobs.gold.content import load_content_rules
    from spark_jobs.gold.kpis import load_kpi_config
    from spark_jobs.silver.job import SilverConfig

    try:
        model = load_scoring(settings.scoring_file)
        rules = load_segments(settings.segments_file)
        learned = load_models(settings.models_file)
        content = load_content_rules(settings.content_rules_file)
        kpis = load_kpi_config(settings.kpis_file)
        SilverConfig.load(settings)  # micro-moment thresholds, context, IP time zones
        if not args.no_spark:
            from spark_jobs.spark import build_spark

            check_rules_compile(build_spark(settings), settings.segments_file, rules)
    except InvalidConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    print(f"ok: {settings.scoring_file} ({model.model_version}, {len(model.signals)} signals)")
    print(f"ok: {settings.segments_file} ({', '.join(r.name for r in rules)})")
    print(f"ok: {settings.models_file} ({len(learned.features)} learned features, margin {learned.margin:g})")
    print(f"ok: {settings.content_rules_file} ({len(content.rules)} rules for {', '.join(content.channels)})")
    print(f"ok: {settings.kpis_file} (version {kpis.version}, targets from the seeds)")
    for path in (settings.micro_moments_file, settings.context_file, settings.ip_timezones_file):
        print(f"ok: {path}")
    return 0


def _update_features(spark: SparkSession, settings: Settings, through: date | None, start: date | None = None) -> None:
    from spark_jobs.silver.user_features import update_user_features

    through = through or datetime.now(UTC).date()
    result = update_user_features(spark, settings, through, start=start)
    span = f"{result.dates[0]} .. {result.dates[-1]}" if result.dates else "no new dates"
    counts = result.counts
    print(
        f"silver.user_features: {span} ({counts.inserted:,} rows inserted, {counts.updated:,} updated, "
        f"{counts.deleted:,} deleted)" + (f"; held back: {result.held_back}" if result.held_back else "")
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.gold.evaluate import MissingTruthError, evaluate

    try:
        result = evaluate(_spark(settings), settings, args.truth)
    except MissingTruthError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"sessions: {result.scored_sessions:,} scored, {result.matched_sessions:,} matched to the truth "
          f"(models: {', '.join(result.model_versions) or 'none'})")  # fmt: skip
    print(f"AUC of intent_score for a purchase: {_fmt(result.auc_converted)}")
    print(f"High Intent vs high_intent_buyer sessions: precision {_fmt(result.high_intent_precision)}, "
          f"recall {_fmt(result.high_intent_recall)}")  # fmt: skip
    segments = sorted({s for row in result.confusion.values() for s in row})
    width = max((len(p) for p in result.confusion), default=7) + 2
    print("personas (rows) x segments (columns), sessions:")
    print(" " * width + "".join(f"{s[:18]:>20}" for s in segments))
    for persona, row in sorted(result.confusion.items()):
        print(f"{persona:<{width}}" + "".join(f"{row.get(s, 0):>20,}" for s in segments))
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
        print(f"written: {args.json}")
    return 0


def cmd_send_times(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError
    from spark_jobs.gold.rhythm import update_send_times

    try:
        result = update_send_times(_spark(settings), settings, args.now)
    except InvalidConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    start, end = result.window
    sources = ", ".join(f"{n:,} from their {source}" for source, n in sorted(result.send_times.items()))
    span = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    print(f"gold.engagement_rhythm: {result.rhythm_rows:,} rows (sessions that ended {span})")
    print(f"gold.send_times: {sum(result.send_times.values()):,} persons ({sources or 'none'})")
    return 0


def _print_metrics(label: str, version: str, m: Any) -> None:
    print(f"  {label:<10} {version:<28} AUC {_fmt(m.auc)}  precision {_fmt(m.precision)}  recall {_fmt(m.recall)}"
          f"  Brier {m.brier:.3f}  calibration error {m.calibration_error:.3f}")  # fmt: skip


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError
    from spark_jobs.gold.models import PromotionRefused, RegistryError
    from spark_jobs.gold.train import TrainingError, promote_version, train

    spark = _spark(settings)
    try:
        result = train(spark, settings)
    except (InvalidConfigError, TrainingError) as exc:
        print(f"error, nothing registered: {exc}", file=sys.stderr)
        return 2
    (t0, t1), (h0, h1) = result.training, result.holdout
    held = result.challenger
    print(f"trained {result.version} on {result.training_rows:,} closed sessions ({t0} .. {t1}); "
          f"held out {held.rows:,} sessions ({h0} .. {h1}, {held.positives:,} converted):")  # fmt: skip
    _print_metrics("learned", result.version, result.challenger)
    _print_metrics("champion", result.champion_version, result.champion)
    print(f"registered in ops.models as a challenger: {result.version}")
    if args.promote:
        try:
            replaced = promote_version(spark, settings, result.version)
        except (PromotionRefused, RegistryError) as exc:
            print(f"not promoted: {exc}")
            return 0
        print(f"promoted {result.version} to champion (retired {replaced or 'none'}); gold rescores on its next run")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.gold import models
    from spark_jobs.gold.train import TrainingError, promote_version

    spark = _spark(settings)
    try:
        if args.action == "promote":
            if not args.version:
                print("error: promote needs a version (`intentlake models list`)", file=sys.stderr)
                return 2
            replaced = promote_version(spark, settings, args.version)
            print(f"champion: {args.version} (retired {replaced or 'none'}); gold rescores on its next run")
        elif args.action == "rollback":
            restored, retired = models.rollback(spark, settings)
            print(f"champion: {restored} (restored; retired {retired}); gold rescores on its next run")
        rows = models.as_listing(models.versions(spark, settings))
    except (models.RegistryError, TrainingError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    print(f"{'model_version':<28} {'kind':<9} {'status':<11} {'AUC':>6} {'vs':>6}  held out")
    for r in rows:
        auc, base = _fmt(r["auc"]), _fmt(r["baseline_auc"])
        print(f"{r['model_version']:<28} {r['kind']:<9} {r['status']:<11} {auc:>6} {base:>6}  {r['holdout'] or ''}")
    return 0


def cmd_content_picks(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError
    from spark_jobs.gold.content import assign_content, load_content_rules

    try:
        rules = load_content_rules(settings.content_rules_file)
    except InvalidConfigError as exc:
        print(f"config error, nothing written: {exc}", file=sys.stderr)
        return 2
    result = assign_content(_spark(settings), settings, rules)
    m = result.merge
    print(f"gold.content_assignments: {result.persons:,} persons, rules {result.rules_version} "
          f"({m.inserted:,} picks new, {m.updated:,} changed, {m.deleted:,} gone)")  # fmt: skip
    for channel, picks in sorted(result.picks.items()):
        listed = ", ".join(f"{rule} {n:,}" for rule, n in sorted(picks.items(), key=lambda kv: -kv[1]))
        print(f"  {channel}: {listed}; no rule matched {result.unmatched.get(channel, 0):,}")
    for rule, n in sorted(result.failures.items()):
        print(f"  rule {rule}: trigger could not be evaluated for {n:,} persons (a null input); it did not match")
    return 0


def cmd_kpis(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from spark_jobs.config import InvalidConfigError
    from spark_jobs.gold.kpis import load_kpi_config, render_report, run_kpis

    try:
        cfg = load_kpi_config(settings.kpis_file)
    except InvalidConfigError as exc:
        print(f"config error, nothing written: {exc}", file=sys.stderr)
        return 2
    day = args.date or datetime.now(UTC).date() - timedelta(days=1)
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    spark = _spark(settings)
    done = run_kpis(spark, settings, day, as_of=end, cfg=cfg)
    print(f"gold.kpis_daily: {done.rows} rows for {day} (table version {done.version})")
    for kpi, value in done.figures.items():
        print(f"  {kpi:<22} {'n/a' if value is None else f'{100 * value:.1f} %'}")
    docs = settings.data_docs_dir / "index.html"
    if args.data_docs:
        from spark_jobs.data_docs import build_data_docs

        built = build_data_docs(spark, settings, settings.data_docs_dir)
        failing = ", ".join(built["failing"]) or "none"
        print(f"data docs: {built['index']} ({len(built['tables'])} tables, failing: {failing})")
    if args.report:
        path = render_report(spark, settings, day, settings.reports_dir / "kpi", docs, cfg)
        print(f"report: {path}")
    return 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    _update_features(_spark(settings), settings, args.through, args.start)
    return 0


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError
    from spark_jobs.gold.tuning import TuningRefused, propose

    until = args.until or datetime.now(UTC).date()
    try:
        proposal = propose(_spark(settings), settings, until, args.out)
    except (InvalidConfigError, TuningRefused) as exc:
        print(f"no proposal, nothing written: {exc}", file=sys.stderr)
        return 2
    first, last = proposal.window
    print(f"closed sessions {first} .. {last}: {proposal.rows:,} ({proposal.positives:,} converted), in-sample:")
    _print_metrics("current", proposal.current.model_version, proposal.current_metrics)
    _print_metrics("proposed", proposal.proposed.model_version, proposal.proposed_metrics)
    old, new = proposal.score_threshold
    weights = ", ".join(f"{s.name} {a.weight:g} -> {s.weight:g}"
                        for s, a in zip(proposal.proposed.signals, proposal.current.signals, strict=True))  # fmt: skip
    print(f"  score threshold {old:g} -> {new}; weights {weights}")
    for rule in proposal.rules:
        print(f"  {rule.name}: " + (f"{rule.current!r} -> {rule.proposed!r}" if rule.tuned else f"kept ({rule.why})"))
    print(f"written (config/ untouched): {proposal.out_dir}\n  review proposal.diff and proposal.json; apply with "
          f"`git apply {proposal.out_dir / 'proposal.diff'}`, `intentlake validate-config`, commit")  # fmt: skip
    return 0


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.erasure import ErasureError, file_request, process_erasures, receipt

    spark = _spark(settings)
    now = datetime.now(UTC)
    subjects = [(kind, getattr(args, kind)) for kind in ("user_id", "anonymous_id", "person_id") if getattr(args, kind)]
    try:
        for kind, subject in subjects:
            request_id = file_request(spark, settings, kind, subject, now)
            print(f"erasure request {request_id} filed for a {kind} (pending; the daily maintenance carries it out)")
        if args.process:
            done = process_erasures(spark, settings, now)
            print(f"erased {len(done.erased)} requests ({done.rows_deleted:,} rows and landing lines deleted); "
                  f"purged {len(done.purged)} ({done.files_vacuumed:,} files vacuumed)")  # fmt: skip
        if args.status:
            print(json.dumps(receipt(spark, settings, args.status), indent=2))
    except ErasureError as exc:
        print(f"erasure: {exc}", file=sys.stderr)
        return 2
    if not (subjects or args.process or args.status):
        print("nothing to do: give --user-id/--anonymous-id/--person-id, --process or --status", file=sys.stderr)
        return 2
    return 0


def cmd_undo_merge(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.silver.identity import UnknownMergeError, undo_merge
    from spark_jobs.silver.job import reattribute

    spark = _spark(settings)
    try:
        changes = undo_merge(spark, settings, args.merge_id, args.reason)
    except UnknownMergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    identity_map = spark.read.format("delta").load(str(settings.table_path("silver.identity_map")))
    nothing = spark.createDataFrame([], "session_id STRING, anonymous_id STRING")
    moved = reattribute(spark, settings, changes, identity_map, nothing)
    print(
        f"merge {args.merge_id} undone: {len(changes.anonymous_ids):,} devices and {len(changes.user_ids):,} logins "
        f"changed person; {moved:,} sessions re-attributed"
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from spark_jobs.config import InvalidConfigError, load_scoring, load_segments

    try:  # fail on a bad config before generating or moving anything
        load_scoring(settings.scoring_file)
        load_segments(settings.segments_file)
    except InvalidConfigError as exc:
        print(f"config error, nothing ran: {exc}", file=sys.stderr)
        return 2
    if settings.lakehouse.exists() and not args.keep:
        print(f"resetting the demo lakehouse at {settings.lakehouse} (use --keep to add to it)")
        shutil.rmtree(settings.lakehouse)
    started = time.monotonic()
    _simulate(settings, events=args.events, seed=args.seed)  # every other knob at simulate()'s default
    print("starting Spark ...")
    spark = _spark(settings)
    timings: dict[str, float] = {}
    for layer in LAYERS:
        t0 = time.monotonic()
        _run_layer(spark, settings, layer, "availableNow")
        timings[layer] = time.monotonic() - t0
        if layer == "silver":
            t0 = time.monotonic()
            _update_features(spark, settings, through=None)
            timings["user features"] = time.monotonic() - t0
    total = time.monotonic() - started
    _print_demo_report(spark, settings, timings, total)
    return 0


def _print_demo_report(spark: SparkSession, settings: Settings, timings: dict[str, float], total: float) -> None:
    counts = {name: spark.table(name).count() for name in TABLES}
    events = counts["bronze.events"]
    print("\n== intentlake demo ==")
    print("rows per table:")
    for name in TABLES:
        print(f"  {name:<22} {counts[name]:>9,}   {settings.table_path(name)}")
    runs = spark.sql(
        "SELECT sum(input_rows) i, sum(accepted_rows) a, sum(quarantined_rows) q, sum(duplicate_rows) d "
        "FROM ops.pipeline_runs WHERE job IN ('bronze', 'bronze-kafka')"
    ).collect()[0]
    print(
        f"bronze accounting: {runs.i:,} input lines = {runs.a:,} accepted + {runs.q:,} quarantined "
        f"+ {runs.d:,} duplicates"
    )
    print("quarantine reasons:")
    for row in spark.sql(
        "SELECT reason, count(*) n, min(detail) example FROM bronze.quarantine GROUP BY reason ORDER BY n DESC"
    ).collect():
        print(f"  {row.reason:<18} {row.n:>6,}   e.g. {row.example[:70]}")
    print("micro-moments (silver.micro_moments):")
    for row in spark.sql(
        "SELECT moment_type, count(*) n, count(DISTINCT session_id) s FROM silver.micro_moments "
        "GROUP BY moment_type ORDER BY n DESC"
    ).collect():
        print(f"  {row.moment_type:<22} {row.n:>7,} in {row.s:,} sessions")
    silver = spark.sql(
        "SELECT count(*) n, count_if(is_closed) closed, count(DISTINCT person_id) people, "
        "count_if(timezone_source = 'event') tz_event, count_if(timezone_source = 'geo') tz_geo, "
        "count_if(timezone_source = 'ip') tz_ip, count_if(sessionized_by = 'max_length') split "
        "FROM silver.sessions"
    ).first()
    late = spark.table("silver.late_events").count()
    merged = spark.sql(
        "SELECT count_if(status = 'active') a, count_if(status = 'undone') u FROM silver.identity_merges"
    ).first()
    print(
        f"silver sessions: {silver.n:,} ({silver.closed:,} closed, {silver.n - silver.closed:,} still open), "
        f"{silver.split:,} split at the maximum length, {late:,} late events kept aside"
    )
    print(
        f"  time zone from the event {silver.tz_event:,}, from lat/lon {silver.tz_geo:,}, "
        f"from the IP {silver.tz_ip:,}; {silver.people:,} people after identity resolution "
        f"({merged.a:,} merges, {merged.u:,} undone)"
    )
    print("  sessions by phase and device:")
    for row in spark.sql(
        "SELECT session_phase, device_type, count(*) n, round(avg(engaged_seconds)) engaged FROM silver.sessions "
        "GROUP BY 1, 2 ORDER BY n DESC LIMIT 8"
    ).collect():
        print(f"    {row.session_phase:<9} {row.device_type or '?':<8} {row.n:>6,}   mean engaged {row.engaged}s")
    print("segments (people, by current segment):")
    for row in spark.sql(
        "SELECT segment, count(*) n, round(avg(intent_score), 1) score FROM gold.user_segments "
        "GROUP BY segment ORDER BY n DESC"
    ).collect():
        print(f"  {row.segment:<14} {row.n:>7,} people   mean intent score {row.score}")
    print("time taken:")
    for layer, seconds in timings.items():
        print(f"  {layer:<13} {seconds:6.1f}s   {events / seconds:>9,.0f} events/s")
    print(f"  total   {total:6.1f}s (simulation, Spark start-up and all layers)")
    print(f"\nThe tables are Delta tables under {settings.lakehouse}; query them with, for example:")
    print('  .venv/bin/intentlake sql "SELECT segment, count(*) FROM gold.user_segments GROUP BY segment"')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="intentlake",
        description="Behavioural-signals lakehouse: events -> bronze -> silver sessions -> gold intent segments.",
        epilog="Settings come from INTENTLAKE_* environment variables; see .env.example.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, handler) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    knobs = simulator_defaults()
    demo = add("demo", "simulate ~200k events and run bronze -> silver -> gold, then print a report", cmd_demo)
    demo.add_argument("--events", type=int, default=knobs["events"], help="events to simulate (default %(default)s)")
    demo.add_argument("--seed", type=int, default=knobs["seed"], help="simulator seed (default %(default)s)")
    demo.add_argument("--keep", action="store_true", help="keep the existing lakehouse instead of resetting it")

    sim = add(
        "simulate", "write realistic, seeded NDJSON events to the landing zone (and the ground truth)", cmd_simulate
    )
    sim.add_argument("--events", type=int, default=knobs["events"], help="about how many events (default %(default)s)")
    sim.add_argument("--seed", type=int, default=knobs["seed"], help="random seed; the same seed writes the same files")
    sim.add_argument("--day", type=date.fromisoformat, default=knobs["day"], help="local day to simulate (%(default)s)")
    sim.add_argument("--days", type=int, default=knobs["days"], help="spread sessions over this many days from --day")
    sim.add_argument("--duplicate-rate", type=float, default=knobs["duplicate_rate"], help="share of events sent twice")
    sim.add_argument(
        "--late-rate", type=float, default=knobs["late_rate"], help="share of events arriving 2-30 min late"
    )
    sim.add_argument("--malformed-rate", type=float, default=knobs["malformed_rate"], help="malformed lines per event")
    sim.add_argument("--lines-per-file", type=int, default=knobs["lines_per_file"], help="lines per landing file")
    sim.add_argument(
        "--sink", choices=("files", "kafka"), default="files", help="landing-zone files (default) or the Kafka topic"
    )

    run = add("run", "run a pipeline layer (or all) as a stream; availableNow catches up and stops", cmd_run)
    run.add_argument("layer", choices=(*LAYERS, "all"), help="which layer to run")
    run.add_argument("--trigger", default=None, help="'availableNow' (default) or an interval like '30 seconds'")
    run.add_argument(
        "--source", choices=("files", "kafka"), default="files", help="bronze input: landing zone (default) or Kafka"
    )

    sql = add(
        "sql",
        "run a Spark SQL query against the lakehouse tables (bronze.events, gold.user_segments ...)",
        cmd_sql,
    )
    sql.add_argument("query", help='e.g. "SELECT segment, count(*) FROM gold.user_segments GROUP BY 1"')
    sql.add_argument("--limit", type=int, default=20, help="rows to print (default 20)")
    sql.add_argument("--format", choices=("table", "csv"), default="table", help="output format")
    sql.add_argument("--truncate", action="store_true", help="truncate long values in table output")

    add("status", "row counts per table and the latest batch of every stream (counts, watermark, offsets)", cmd_status)

    replay = add(
        "replay-quarantine",
        "re-ingest selected bronze.quarantine rows after a fix; events bronze already holds are not stored again",
        cmd_replay_quarantine,
    )
    replay.add_argument("--reason", action="append", help="only rows quarantined for this reason (repeatable)")
    replay.add_argument("--since", help="only rows quarantined at or after this ISO time (UTC if no offset)")
    replay.add_argument("--until", help="only rows quarantined before this ISO time")
    replay.add_argument("--ingest-batch", help="only rows rejected by this <query id>/<batch id>")
    replay.add_argument("--event-id", action="append", help="only rows with this event id (repeatable)")
    replay.add_argument("--dry-run", action="store_true", help="report what a replay would do; write nothing")

    feats = add(
        "features",
        "extend silver.user_features (point-in-time, one row per person and day) through a date",
        cmd_features,
    )
    feats.add_argument("--through", type=date.fromisoformat, help="last as_of_date to compute (default: today, UTC)")
    feats.add_argument("--start", type=date.fromisoformat, help="recompute from this as_of_date (after late data)")

    ev = add(
        "evaluate",
        "compare gold's scores and segments with the simulator's ground truth (AUC, High Intent precision/recall, "
        "personas x segments)",
        cmd_evaluate,
    )
    ev.add_argument("--truth", type=Path, help="ground-truth folder (default: INTENTLAKE_TRUTH)")
    ev.add_argument("--json", type=Path, help="also write the figures to this JSON file (aggregates only)")

    tr = add(
        "train",
        "fit the learned intent model on point-in-time silver features and register it in ops.models as a "
        "challenger (AUC against the champion on held-out days)",
        cmd_train,
    )
    tr.add_argument("--promote", action="store_true", help="then promote it if it beats the champion by the margin")

    mod = add(
        "models",
        "list ops.models; promote a challenger (only if it beats the champion on held-out days) or roll back",
        cmd_models,
    )
    mod.add_argument("action", nargs="?", choices=("list", "promote", "rollback"), default="list")
    mod.add_argument("version", nargs="?", help="the version to promote")
    mod.add_argument("--json", action="store_true", help="print the registry as JSON")

    add(
        "content-picks",
        "evaluate config/content_rules.yaml for every person into gold.content_assignments (email/CRM picks)",
        cmd_content_picks,
    )

    tune = add(
        "tune",
        "propose signal weights and score thresholds fitted to recent outcomes (written beside config/ for review)",
        cmd_tune,
    )
    tune.add_argument("--until", type=date.fromisoformat, help="the window ends the day before this (default: today)")
    tune.add_argument("--out", type=Path, help="proposal folder (default <lakehouse>/proposals/tune_signals/<until>)")

    erase = add(
        "erase",
        "file an erasure request (right to be forgotten), carry out pending ones (--process) or show a receipt",
        cmd_erase,
    )
    erase.add_argument("--user-id", dest="user_id", help="erase the person who logged in with this user id")
    erase.add_argument("--anonymous-id", dest="anonymous_id", help="erase the person behind this device id")
    erase.add_argument("--person-id", dest="person_id", help="erase this person_id")
    erase.add_argument("--process", action="store_true", help="carry out pending requests now (else: maintenance)")
    erase.add_argument("--status", metavar="REQUEST_ID", help="print the receipt of a request")

    kpis = add(
        "kpis",
        "compute a day's KPIs into gold.kpis_daily (and with --report the HTML report under <lakehouse>/reports/kpi)",
        cmd_kpis,
    )
    kpis.add_argument("--date", type=date.fromisoformat, help="UTC day YYYY-MM-DD (default: yesterday)")
    kpis.add_argument("--report", action="store_true", help="also render the self-contained HTML report")
    kpis.add_argument(
        "--data-docs",
        action="store_true",
        help="also validate every table with its suite and rebuild the Data Docs the report links to",
    )

    send = add(
        "send-times",
        "rewrite gold.engagement_rhythm and gold.send_times (best local hour per person) from recent sessions",
        cmd_send_times,
    )
    send.add_argument(
        "--now",
        type=lambda text: datetime.fromisoformat(text).replace(tzinfo=datetime.fromisoformat(text).tzinfo or UTC),
        help="end of the window (UTC unless a zone is given; default: now), e.g. to replay a simulated day",
    )

    undo = add(
        "undo-merge",
        "undo an identity merge by hand (silver.identity_merges.merge_id): its two sides are never linked again",
        cmd_undo_merge,
    )
    undo.add_argument("merge_id", help="the merge to undo")
    undo.add_argument("--reason", required=True, help="why, recorded in silver.identity_merges")

    val = add(
        "validate-config",
        "check config/scoring.yaml and config/segments.yaml without running anything",
        cmd_validate_config,
    )
    val.add_argument("--no-spark", action="store_true", help="skip the Spark analyzer check of segment rules")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    return args.handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
