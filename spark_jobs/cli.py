"""`intentlake`: the one command-line entry point (demo, simulate, run, sql, status, replay-quarantine,
features, train, models, evaluate, send-times, content-picks, kpis, erase, tune, undo-merge, validate-config)."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from spark_jobs import operations as op
from spark_jobs.bronze.landing import LANDING_SUFFIXES
from spark_jobs.bronze.replay import Selection
from spark_jobs.config import InvalidConfigError
from spark_jobs.erasure import ErasureError
from spark_jobs.gold.evaluate import MissingTruthError
from spark_jobs.gold.models import PromotionRefused, RegistryError
from spark_jobs.gold.train import TrainingError
from spark_jobs.gold.tuning import TuningRefused
from spark_jobs.operations import LAYERS, Lakehouse, simulator_defaults
from spark_jobs.settings import Settings, SettingsError, interval_seconds
from spark_jobs.silver.identity import UnknownMergeError

__all__ = ["build_parser", "main", "simulator_defaults"]


def _print_simulated(done: op.Simulated, settings: Settings) -> None:
    summary = done.summary
    print(
        f"simulated {summary.events:,} events from {summary.users:,} users in {summary.sessions:,} sessions "
        f"({summary.lines:,} lines: +{summary.duplicates:,} duplicates, {summary.malformed:,} malformed; "
        f"{summary.late:,} late) into {summary.files} files in {done.seconds:.1f}s"
    )
    if done.published is not None:
        print(f"  published {done.published:,} records to {settings.kafka_topic} at {settings.kafka_bootstrap}")
    else:
        print(f"  landing: {summary.landing}")
    print(f"  truth:   {summary.truth}")


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    knobs = {name: getattr(args, name) for name in simulator_defaults()}
    _print_simulated(op.simulate_events(settings, args.sink, **knobs), settings)
    return 0


def _print_step(step: op.LayerRun | Any) -> None:
    if isinstance(step, op.LayerRun):
        print(f"{step.layer}: done in {step.seconds:.1f}s")
    elif isinstance(step, op.OnlineStoreRun):
        _print_online(step)
    elif isinstance(step, op.AudienceRun):
        profiles = op.profiles_summary(step.profiles)
        print(f"audience inputs: send times for {sum(dict(step.send_times.send_times).values()):,} persons, content "
              f"picks for {step.content.persons:,}, profiles of {profiles['persons']:,} (consenting "
              f"{profiles['consenting']})")  # fmt: skip
    else:
        _print_features(step)


def _print_online(run: op.OnlineStoreRun) -> None:
    moved = [s for s in run.sources if s.mode != "current"]
    detail = "; ".join(
        f"{s.table} {s.mode} to v{s.to_version}: {s.written:,} written"
        + (f", {s.skipped:,} older skipped" if s.skipped else "")
        + (f" ({s.reason})" if s.mode == "rebuild" else "")
        for s in moved
    )
    print(f"online store: done in {run.seconds:.1f}s; " + (detail or "up to date"))


def _idle_bronze(step: object) -> bool:
    """A follow cycle's bronze run that found nothing (the cycle stopped there: silver and gold skipped)."""
    return isinstance(step, op.LayerRun) and step.layer == "bronze" and not step.changed


@contextlib.contextmanager
def stopping_on_signals() -> Iterator[Callable[[], bool]]:
    """A flag SIGINT and SIGTERM set while inside (the step in progress finishes; a second signal stops at
    once); the previous handlers are back on the way out."""
    stopping = threading.Event()

    def handle(signum: int, frame: Any) -> None:
        if stopping.is_set():
            raise KeyboardInterrupt
        print(f"{signal.Signals(signum).name}: stopping after the step in progress", file=sys.stderr)
        stopping.set()

    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping.is_set
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    if args.layer == "online":
        try:
            _print_online(op.online_store(Lakehouse(settings)))
        except op.store.OnlineStoreError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        return 0
    layers = LAYERS if args.layer == "all" else (args.layer,)
    trigger = args.trigger or settings.trigger  # --trigger, else INTENTLAKE_TRIGGER
    follow = args.layer == "all" and trigger != "availableNow"
    try:
        if follow:  # the layers chained in cycles, one at most every interval, until stopped
            every = interval_seconds(trigger, "--trigger" if args.trigger else "INTENTLAKE_TRIGGER")
            lakehouse = Lakehouse(settings)
            lakehouse.spark  # noqa: B018 (started first: starting Spark replaces the SIGINT handler)
            with stopping_on_signals() as stop:
                for step in op.follow_pipeline(lakehouse, every, args.source, stop):
                    if not _idle_bronze(step):  # not a line per interval while nothing lands
                        _print_step(step)
        else:
            for step in op.run_pipeline(Lakehouse(settings), layers, args.trigger, args.source):
                _print_step(step)
    except InvalidConfigError as exc:
        print(f"config error, nothing ran: {exc}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return 0


def cmd_sql(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = op.sql(Lakehouse(settings), args.query, write=args.write)
    except op.ReadOnlyError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        print(result.limit(args.limit).toPandas().to_csv(index=False), end="")
    else:
        result.show(args.limit, truncate=args.truncate)
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    state = op.status(Lakehouse(settings))
    print("tables (rows, location, written by; gated by a layer's quality gate):")
    for t in state.tables:
        gate = f"; gate {t.gated_by}" if t.gated_by else ""
        print(f"  {t.name:<26} {t.rows:>10,} rows   {t.location}   ({', '.join(t.producers)}{gate})")
    latest = state.latest_batches
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
    if state.latest_syncs:
        print("segment syncs (latest run of each destination in ops.sync_runs):")
    for r in state.latest_syncs:
        print(
            f"  {r.destination:<26} {r.status:<9} at {r.started_at:%Y-%m-%d %H:%M:%S} UTC ({r.mode}) audience "
            f"{r.audience:,}: added {r.added:,}, updated {r.updated:,}, removed {r.removals:,}, acknowledged "
            f"{r.acknowledged:,}, refused {r.rejected:,}, dead letters {r.dead_lettered:,}"
            + (f"; {r.error[:200]}" if r.error else "")
        )
    _print_online_status(state.online_store)
    for name, said in (state.services or {}).items():
        print(f"{name}: {said}")
    if state.unread_landing:
        print(
            f"landing files bronze does not read ({len(state.unread_landing)}; it reads {', '.join(LANDING_SUFFIXES)}):"
        )
        for path in state.unread_landing[:20]:
            print(f"  {path}")
        if len(state.unread_landing) > 20:
            print(f"  ... and {len(state.unread_landing) - 20} more")
    return 0


def _print_online_status(online: dict | None) -> None:
    if online is None:
        print("online store: not configured (INTENTLAKE_REDIS_URL; `make redis-up` starts a local Redis)")
        return
    if "error" in online:
        print(f"online store: does not answer ({online['error'][:200]})")
        return
    print(f"online store (Redis): {online['persons']:,} persons; each source's version applied / the table's:")
    for table, meta in online["sources"].items():
        applied = meta.get("version", "-")
        behind = "" if str(applied) == str(meta["table_version"]) else "  (behind: the next run applies it)"
        when = f" at {meta['applied_at']}" if meta.get("applied_at") else ""
        print(f"  {table:<26} {applied:>6} / {meta['table_version']:<6}{when}{behind}")


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def cmd_replay_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    selection = Selection(
        reasons=tuple(args.reason or ()),
        since=_utc(args.since) if args.since else None,
        until=_utc(args.until) if args.until else None,
        ingest_batch=args.ingest_batch,
        event_ids=tuple(args.event_id or ()),
    )
    result = op.replay(Lakehouse(settings), selection, dry_run=args.dry_run)
    print(("dry run, nothing written: " if args.dry_run else "") + result.summary())
    return 0


def cmd_validate_config(args: argparse.Namespace, settings: Settings) -> int:
    try:
        spark = None if args.no_spark else Lakehouse(settings).spark
        passed = op.validate_config(settings, spark)
    except InvalidConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return 2
    for line in passed:
        print(f"ok: {line}")
    return 0


def _print_features(result: Any) -> None:
    span = f"{result.dates[0]} .. {result.dates[-1]}" if result.dates else "no new dates"
    counts = result.counts
    print(
        f"silver.user_features: {span} ({counts.inserted:,} rows inserted, {counts.updated:,} updated, "
        f"{counts.deleted:,} deleted)" + (f"; held back: {result.held_back}" if result.held_back else "")
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = op.evaluate_scores(Lakehouse(settings), args.truth)
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
    try:
        result = op.send_times(Lakehouse(settings), args.now)
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
    lh = Lakehouse(settings)
    try:
        result = op.train_model(lh)
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
            replaced = op.promote(lh, result.version)
        except (PromotionRefused, RegistryError) as exc:
            print(f"not promoted: {exc}")
            return 0
        print(f"promoted {result.version} to champion (retired {replaced or 'none'}); gold rescores on its next run")
    return 0


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    lh = Lakehouse(settings)
    try:
        if args.action == "promote":
            if not args.version:
                print("error: promote needs a version (`intentlake models list`)", file=sys.stderr)
                return 2
            replaced = op.promote(lh, args.version)
            print(f"champion: {args.version} (retired {replaced or 'none'}); gold rescores on its next run")
        elif args.action == "rollback":
            restored, retired = op.rollback(lh)
            print(f"champion: {restored} (restored; retired {retired}); gold rescores on its next run")
        rows = op.model_listing(lh)
    except (RegistryError, TrainingError) as exc:
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
    try:
        result = op.content_picks(Lakehouse(settings))
    except InvalidConfigError as exc:
        print(f"config error, nothing written: {exc}", file=sys.stderr)
        return 2
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
    lh = Lakehouse(settings)
    day = args.date or datetime.now(UTC).date() - timedelta(days=1)
    try:
        done = op.kpis(lh, day)
    except InvalidConfigError as exc:
        print(f"config error, nothing written: {exc}", file=sys.stderr)
        return 2
    print(f"gold.kpis_daily: {done.rows} rows for {day} (table version {done.version})")
    for kpi, value in done.figures.items():
        print(f"  {kpi:<22} {'n/a' if value is None else f'{100 * value:.1f} %'}")
    if args.data_docs:
        built = op.data_docs(lh)
        failing = ", ".join(built["failing"]) or "none"
        print(f"data docs: {built['index']} ({len(built['tables'])} tables, failing: {failing})")
    if args.report:
        print(f"report: {op.kpi_report(lh, day)}")
    return 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    _print_features(op.update_features(Lakehouse(settings), args.through, args.start))
    return 0


def cmd_tune(args: argparse.Namespace, settings: Settings) -> int:
    until = args.until or datetime.now(UTC).date()
    try:
        proposal = op.tune(Lakehouse(settings), until, args.out)
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
    lh = Lakehouse(settings)
    now = datetime.now(UTC)
    subjects = [(kind, getattr(args, kind)) for kind in ("user_id", "anonymous_id", "person_id") if getattr(args, kind)]
    try:
        for kind, subject in subjects:
            request_id = op.file_erasure(lh, kind, subject, now)
            print(f"erasure request {request_id} filed for a {kind} (pending; the daily maintenance carries it out)")
        if args.process:
            done = op.erase(lh, now)
            print(f"erased {len(done.erased)} requests ({done.rows_deleted:,} rows and landing lines deleted); "
                  f"purged {len(done.purged)} ({done.files_vacuumed:,} files vacuumed)")  # fmt: skip
        if args.status:
            print(json.dumps(op.erasure_receipt(lh, args.status), indent=2))
    except ErasureError as exc:
        print(f"erasure: {exc}", file=sys.stderr)
        return 2
    if not (subjects or args.process or args.status):
        print("nothing to do: give --user-id/--anonymous-id/--person-id, --process or --status", file=sys.stderr)
        return 2
    return 0


def cmd_undo_merge(args: argparse.Namespace, settings: Settings) -> int:
    try:
        done = op.undo_merge(Lakehouse(settings), args.merge_id, args.reason)
    except UnknownMergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"merge {args.merge_id} undone: {done.devices:,} devices and {done.logins:,} logins "
        f"changed person; {done.sessions_moved:,} sessions re-attributed"
    )
    return 0


def _print_sync(result) -> None:
    stats = result.stats
    seconds = (result.finished_at - result.started_at).total_seconds() if result.finished_at else 0.0
    print(
        f"{result.destination} ({result.destination_type}, {result.mode}): {result.status} in {seconds:.1f} s; "
        f"audience {result.audience:,} at gold version {result.gold_version}: added {result.added:,}, updated "
        f"{result.updated:,}, resent {result.resent:,}, removed {result.removals:,}, unchanged "
        f"{result.unchanged:,}, dead letters {result.dead_lettered:,}; acknowledged {result.acknowledged:,}, "
        f"refused {result.rejected:,}; {stats.requests:,} requests, {stats.retries:,} retried, "
        f"{stats.throttled:,} throttled" + (f"; wrote {result.file}" if result.file else "")
    )
    for sample in result.samples:
        print(f"    would send ({sample['change']}) person {sample['person_id']}: {json.dumps(sample['fields'])}")


def _sync_progress(result) -> None:
    calls = result.upserts + result.removals
    print(f"  {result.destination}: {result.acknowledged + result.rejected:,} of {calls:,} calls answered "
          f"(refused {result.rejected:,})", file=sys.stderr)  # fmt: skip


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    if not args.names and not args.all:
        print("name one or more destinations (config/destinations.yaml) or give --all", file=sys.stderr)
        return 2
    mode = "dry_run" if args.dry_run else "full" if args.full else "diff"
    lh = Lakehouse(settings)
    try:
        names = None if args.all else args.names
        results = op.sync(lh, names, mode, progress=_sync_progress)
    except InvalidConfigError as exc:
        print(f"config error, nothing sent: {exc}", file=sys.stderr)
        return 2
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    except op.SyncFailed as exc:
        print(str(exc), file=sys.stderr)
        print("each run is in ops.sync_runs; refusals in ops.sync_rejections", file=sys.stderr)
        return 1
    for result in results:
        _print_sync(result)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    try:  # fail on a bad config before generating or moving anything
        op.validate_config(settings)
    except InvalidConfigError as exc:
        print(f"config error, nothing ran: {exc}", file=sys.stderr)
        return 2
    if settings.lakehouse.exists() and not args.keep:
        print(f"resetting the demo lakehouse at {settings.lakehouse} (use --keep to add to it)")
        shutil.rmtree(settings.lakehouse)
    started = time.monotonic()
    # the demo speaks like real sources: Snowplow, server-side track calls, custom events, shared session ids
    _print_simulated(op.simulate_events(settings, events=args.events, seed=args.seed, realistic=True), settings)
    settings, online = op.local_redis(settings)  # the online store and the decisions at the end need one
    print("starting Spark ...")
    lh = Lakehouse(settings)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    for step in op.run_pipeline(lh):
        label = "online store" if isinstance(step, op.OnlineStoreRun) else "user features"
        timings[step.layer if isinstance(step, op.LayerRun) else label] = time.monotonic() - t0
        t0 = time.monotonic()
    op.audience_inputs(lh, now=op.newest_session_end(lh))  # the simulated days, not today: send times' window
    timings["send times, content"] = time.monotonic() - t0
    t0 = time.monotonic()
    syncs = op.demo_syncs(lh)
    timings["segment syncs"] = time.monotonic() - t0
    decisions: list[op.DemoDecision] = []
    if settings.redis_url:
        t0 = time.monotonic()
        op.online_store(lh)  # again: the content picks, send times and profiles written after gold
        decisions = op.demo_decisions(lh)
        timings["online store, decisions"] = time.monotonic() - t0
    _print_demo_report(lh, op.demo_report(lh), timings, time.monotonic() - started)
    print(
        "\nsegment syncs (config/destinations.yaml; each run is a row of ops.sync_runs, the state in ops.sync_state):"
    )
    for done in syncs:
        _print_sync(done.result)
        held = "" if done.holds is None else f"; it now holds {done.holds}"
        print(f"    sent to {done.target}{held}")
    print("  (a destination without INTENTLAKE_DEST_<NAME>_TOKEN went to a local stand-in of its vendor's API;")
    print("   set the token and URL to reach the real account: `intentlake sync NAME`)")
    _print_decisions(decisions, online)
    return 0


def _print_decisions(decisions: list[op.DemoDecision], online: str) -> None:
    if not decisions:
        print(f"\ndecisions: none ({online}; `make redis-up` or INTENTLAKE_REDIS_URL gives the demo one)")
        return
    print(
        f"\ndecisions (what the decision API answers; online store: {online}, left running for `make serve`;"
        " `make redis-down` stops it):"
    )
    for d in decisions:
        answer, content = d.decision, d.decision["content"] or {}
        score = "-" if answer["intent_score"] is None else f"{answer['intent_score']:.1f}"
        print(f"  {d.who:<22} {d.asked}")
        print(f"      segment {answer['segment'] or '-'}, score {score}; {content.get('rule', 'no rule')}: "
              f"{content.get('tone', '')} / {content.get('format', '')} / \"{content.get('cta', '')}\"")  # fmt: skip
        print(f"      {answer['basis']}; decision {answer['decision_id']}")


def _print_demo_report(lh: Lakehouse, report: op.DemoReport, timings: dict[str, float], total: float) -> None:
    settings = lh.settings
    counts = report.counts
    events = counts["bronze.events"]
    print("\n== intentlake demo ==")
    print("rows per table:")
    for name, n in counts.items():
        print(f"  {name:<26} {n:>9,}   {settings.table_path(name)}")
    runs = report.bronze
    print(
        f"bronze accounting: {runs.i:,} input lines = {runs.a:,} accepted + {runs.q:,} quarantined "
        f"+ {runs.d:,} duplicates"
    )
    print("quarantine reasons:")
    for row in report.quarantine:
        print(f"  {row.reason:<18} {row.n:>6,}   e.g. {row.example[:70]}")
    print("events by source (custom: names config/event_vocabulary.yaml does not map, kept, not quarantined):")
    for row in report.sources:
        print(f"  {row.kind:<12} {row.n:>9,}   of which custom {row.custom:,}")
    if report.custom:
        print("  custom events: " + ", ".join(f"{row.event_name} {row.n:,}" for row in report.custom))
    print("micro-moments (silver.micro_moments):")
    for row in report.moments:
        print(f"  {row.moment_type:<22} {row.n:>7,} in {row.s:,} sessions")
    silver, merged = report.silver, report.merges
    print(
        f"silver sessions: {silver.n:,} ({silver.closed:,} closed, {silver.n - silver.closed:,} still open), "
        f"{silver.split:,} split at the maximum length, {report.late_events:,} late events kept aside"
    )
    print(
        f"  time zone from the event {silver.tz_event:,}, from lat/lon {silver.tz_geo:,}, "
        f"from the IP {silver.tz_ip:,}; {silver.people:,} people after identity resolution "
        f"({merged.a:,} merges, {merged.u:,} undone)"
    )
    print("  sessions by phase and device:")
    for row in report.phases:
        print(f"    {row.session_phase:<9} {row.device_type or '?':<8} {row.n:>6,}   mean engaged {row.engaged}s")
    print("segments (people, by current segment):")
    for row in report.segments:
        print(f"  {row.segment:<14} {row.n:>7,} people   mean intent score {row.score}")
    print("time taken:")
    for step, seconds in timings.items():
        print(f"  {step:<20} {seconds:6.1f}s   {events / max(seconds, 1e-9):>9,.0f} events/s")
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
    sim.add_argument("--realistic", action="store_true", help="also Snowplow self-describing events, server-side "
                     "track calls, session ids shared across devices and custom events (as make demo)")  # fmt: skip
    sim.add_argument(
        "--sink", choices=("files", "kafka"), default="files", help="landing-zone files (default) or the Kafka topic"
    )

    run = add("run", "run a pipeline layer (or all) as a stream; availableNow catches up and stops", cmd_run)
    run.add_argument(
        "layer", choices=(*LAYERS, "all", "online"),
        help="which layer to run (online: bring the Redis online store up to gold, INTENTLAKE_REDIS_URL)",
    )  # fmt: skip
    run.add_argument(
        "--trigger",
        default=None,
        help="'availableNow' (default) or an interval like '30 seconds' "
        "(one layer: its stream until stopped; all: the layers chained, a cycle at most that often)",
    )
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
    sql.add_argument(
        "--write", action="store_true", help="allow statements that change tables (default: read-only, refused)"
    )

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

    syn = add(
        "sync",
        "send segment changes to destinations (config/destinations.yaml): HubSpot, Braze, Mailchimp, webhooks, "
        "files; only what changed since each destination's last acknowledged state",
        cmd_sync,
    )
    syn.add_argument("names", nargs="*", help="destination names (or --all)")
    syn.add_argument("--all", action="store_true", help="every configured destination")
    syn.add_argument("--dry-run", action="store_true", help="compute and record the diff; send nothing")
    syn.add_argument("--full", action="store_true", help="send everyone in the audience again (after a vendor reset)")

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

    serve = add(
        "serve",
        "serve the decision API (/api/content, /api/personalize) or the collector (Segment's /v1/*) until stopped",
        cmd_serve,
    )
    serve.add_argument("service", choices=("api", "collector"), help="which service")
    serve.add_argument(
        "--port", type=int, default=None,
        help="port (default INTENTLAKE_API_PORT, 8700, or INTENTLAKE_COLLECTOR_PORT, 8701)",
    )  # fmt: skip
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    return parser


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    if args.service == "collector":
        from spark_jobs.serving.collector import create_app, write_key_file

        port = args.port or settings.collector_port
        app = create_app(settings)  # config and settings errors before anything listens
        where = (
            "INTENTLAKE_COLLECTOR_WRITE_KEYS"
            if settings.collector_write_keys
            else f"the file {write_key_file(settings)}"
        )
        sink = f"landing zone {settings.landing}"
        if settings.collector_sink == "kafka":
            sink = f"Kafka topic {settings.kafka_topic} at {settings.kafka_bootstrap}"
        print(f"collector on http://{args.host}:{port} (Segment /v1/*, any format on /v1/events) into the {sink}; "
              f"write key in {where}", flush=True)  # fmt: skip
    else:
        from spark_jobs.serving.api import create_app, key_file

        port = args.port or settings.api_port
        app = create_app(settings)
        where = "INTENTLAKE_API_KEYS" if settings.api_keys else f"the file {key_file(settings)}"
        store = (
            "the online store at INTENTLAKE_REDIS_URL"
            if settings.redis_url
            else "no online store (INTENTLAKE_REDIS_URL)"
        )
        print(f"decision API on http://{args.host}:{port} (docs: /docs); API key in {where}; {store}", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="warning", access_log=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    return args.handler(args, settings)


if __name__ == "__main__":
    sys.exit(main())
