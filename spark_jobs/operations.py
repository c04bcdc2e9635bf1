"""The use-case layer: every operation an operator can run, one function each, called alike by the
`intentlake` CLI (spark_jobs/cli.py: parses arguments, prints) and the Airflow DAGs (dags/: one call per task).

Each operation takes a `Lakehouse` (the settings plus one Spark session, built on first use with every
table registered) and returns a result object. The `*_summary` forms are what a DAG task returns to XCom:
small dicts of counts, versions and names, never row contents or secrets. Operations that Airflow runs
for a data interval take the interval's end and are idempotent: a retried task changes nothing more.

The tables each operation writes are declared in their contracts (`-- @producer:`, spark_jobs/registry.py);
tests/unit/test_registry.py checks every producer named there is an operation here.
"""

from __future__ import annotations

import inspect
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_jobs.activation.destinations import configured as configured_destinations
from spark_jobs.activation.sync import SyncResult
from spark_jobs.activation.sync import sync as sync_destination
from spark_jobs.bronze import job as bronze
from spark_jobs.bronze.landing import unread_files
from spark_jobs.bronze.replay import ReplayResult, Selection, replay_quarantine
from spark_jobs.bronze.vocabulary import vocabulary_at
from spark_jobs.config import check_rules_compile, load_models, load_scoring, load_segments
from spark_jobs.contracts import ensure_tables, read_table, table_version
from spark_jobs.data_docs import build_data_docs
from spark_jobs.erasure import ErasureRun, file_request, process_erasures, receipt
from spark_jobs.gates import check_layer
from spark_jobs.gold import job as gold
from spark_jobs.gold import models
from spark_jobs.gold.content import ContentRun, assign_content, load_content_rules
from spark_jobs.gold.evaluate import Evaluation, evaluate
from spark_jobs.gold.kpis import KpiRun, load_kpi_config, render_report, run_kpis
from spark_jobs.gold.rhythm import RhythmResult, update_send_times
from spark_jobs.gold.train import TrainResult, promote_version, train
from spark_jobs.gold.tuning import Proposal, TuningRefused, propose
from spark_jobs.kafka import publish_files
from spark_jobs.locks import batch_lock
from spark_jobs.maintenance import optimize, vacuum
from spark_jobs.registry import TABLES, gated_tables, table_info
from spark_jobs.serving import online_store as store
from spark_jobs.serving.online_store import OnlineStoreRun
from spark_jobs.settings import Settings
from spark_jobs.silver import job as silver
from spark_jobs.silver.identity import undo_merge as undo_identity_merge
from spark_jobs.silver.job import SilverConfig, reattribute
from spark_jobs.silver.profiles import ProfilesRun, update_profiles
from spark_jobs.silver.user_features import UserFeaturesRun, update_user_features
from spark_jobs.simulate import SimulationSummary, simulate
from spark_jobs.spark import build_spark

LAYERS = ("bronze", "silver", "gold")


class Lakehouse:
    """The settings and one Spark session for a run of operations (the session is built on first use,
    with every table of tables/ created or registered, and reused by every operation after)."""

    def __init__(
        self, settings: Settings | None = None, spark: SparkSession | None = None, app_name: str = "intentlake"
    ) -> None:
        self.settings = settings or Settings.from_env()
        self._spark = spark
        self._app_name = app_name

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            self._spark = build_spark(self.settings, app_name=self._app_name)
        ensure_tables(self._spark, self.settings)  # cheap once done: it remembers what it registered
        return self._spark

    def table(self, name: str, version: int | None = None) -> DataFrame:
        return read_table(self.spark, self.settings, name, version)

    def writing(self, purpose: str) -> AbstractContextManager[None]:
        """Hold the lakehouse lock shared while an operation writes: erasure and maintenance wait for it."""
        return batch_lock(self.settings.lock_dir, self.settings.lock_timeout_seconds, purpose)


def utc(moment: datetime) -> datetime:
    """A plain UTC datetime (Airflow hands tasks pendulum times; a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return datetime.fromtimestamp(moment.timestamp(), UTC)


# ---------------------------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class LayerRun:
    layer: str
    seconds: float
    versions: dict[str, list[int]]  # gated table -> [version before, version after]

    @property
    def changed(self) -> bool:
        """Whether the run committed to any of its gated tables (an idle run did not)."""
        return any(before != after for before, after in self.versions.values())


def check_config(lh: Lakehouse) -> None:
    """Every config gold and the content picks read, checked before any layer moves data
    (raises InvalidConfigError naming the file, the rule and the problem)."""
    gold.load_config(lh.spark, lh.settings)


def run_layer(lh: Lakehouse, layer: str, trigger: str | None = None, source: str = "files") -> LayerRun:
    """Run one layer as a stream: `availableNow` (default) catches up from its checkpoint and stops.
    Silver is followed by silver.user_features through today, so gold's segments read current features."""
    if layer not in LAYERS:
        raise ValueError(f"layer {layer!r}: use one of {LAYERS}")
    spark, settings = lh.spark, lh.settings
    tables = gated_tables(layer)
    before = {t: table_version(spark, settings, t) for t in tables}
    started = datetime.now(UTC)
    if layer == "bronze":
        bronze.run(spark, settings, trigger, source=source)
    elif layer == "silver":
        silver.run(spark, settings, trigger)
    else:
        gold.run(spark, settings, trigger)
    seconds = (datetime.now(UTC) - started).total_seconds()
    after = {t: table_version(spark, settings, t) for t in tables}
    return LayerRun(layer, seconds, {t: [before[t], after[t]] for t in tables})


def run_pipeline(
    lh: Lakehouse, layers: Iterable[str] = LAYERS, trigger: str | None = None, source: str = "files"
) -> Iterable[LayerRun | UserFeaturesRun | OnlineStoreRun]:
    """Run the layers in order (a bad config stops it before any moves data); after silver, extend
    silver.user_features through today; after gold, the online store when one is configured. Yields each
    step's result as it finishes."""
    layers = tuple(layers)
    if "gold" in layers:
        check_config(lh)
    for layer in layers:
        yield from _layer_steps(lh, layer, trigger, source)


def _layer_steps(
    lh: Lakehouse, layer: str, trigger: str | None, source: str, audience: bool = False
) -> Iterator[LayerRun | UserFeaturesRun | AudienceRun | OnlineStoreRun]:
    """One layer's run; after a silver run that ends (not a stream left running), the user features; after
    such a gold run, the online store when one is configured (INTENTLAKE_REDIS_URL), preceded by the audience
    inputs it also reads (send times, content picks, profiles with consent) when `audience` (follow mode:
    the audience_inputs DAG's work, which a deployment schedules on gold's Asset)."""
    yield run_layer(lh, layer, trigger, source)
    if layer == "silver" and trigger in (None, "availableNow"):
        yield update_features(lh)
    if layer == "gold" and trigger in (None, "availableNow") and lh.settings.redis_url:
        if audience:
            yield audience_inputs(lh)
        yield online_store(lh)


def online_store(lh: Lakehouse) -> OnlineStoreRun:
    """Bring the Redis online store up to gold's and silver's latest versions (spark_jobs/serving/online_store.py):
    each source table's changes since the store last applied it, or its whole snapshot when the store has
    lost them. Holds the lakehouse lock shared, so an erasure never runs between its read and its writes."""
    with lh.writing("online store"):
        return store.update_online_store(lh.spark, lh.settings)


# what each layer reads that can give it new work: the table it streams from (and, for gold, the model
# registry: a promotion rescores everyone at gold's start)
UPSTREAM = {"silver": ("bronze.events",), "gold": ("silver.sessions", "ops.models")}


def follow_pipeline(
    lh: Lakehouse, interval_seconds: float, source: str = "files", stop: Callable[[], bool] = lambda: False
) -> Iterator[LayerRun | UserFeaturesRun | AudienceRun | OnlineStoreRun]:
    """`run all` chained until `stop()` is true: each cycle takes what has arrived through bronze, silver,
    silver.user_features and gold, and the next starts at most `interval_seconds` after this one started.

    Every layer still runs as its own availableNow stream with its own checkpoint (the exactly-once and
    kill -9 guarantees are those of `run all`), but none waits for a trigger of its own: silver starts as
    soon as bronze has committed, gold as soon as silver has (bench/freshness.py --mode chained measures
    it against three streams on their own triggers). A layer whose upstream table has not changed since its
    last run in this process is skipped (after a restart, each runs once to catch up; gold also runs after a
    model promotion or rollback, which rescores everyone). Yields each step's result as it finishes; `stop`
    is checked between steps and while waiting.
    """
    check_config(lh)
    started_from: dict[str, tuple[int, ...]] = {}  # layer -> its upstream tables' versions when its last run started
    while not stop():
        cycle = time.monotonic()
        for layer in LAYERS:
            if layer in UPSTREAM:
                version = tuple(table_version(lh.spark, lh.settings, name) for name in UPSTREAM[layer])
                if started_from.get(layer) == version:
                    continue  # nothing new upstream: the stream would start, find nothing, and stop
                started_from[layer] = version
            for step in _layer_steps(lh, layer, "availableNow", source, audience=True):  # whatever the trigger says
                yield step
                if stop():
                    return
        while not stop() and time.monotonic() < cycle + interval_seconds:
            time.sleep(min(0.2, max(0.0, cycle + interval_seconds - time.monotonic())))


def update_features(lh: Lakehouse, through: date | None = None, start: date | None = None) -> UserFeaturesRun:
    """Extend silver.user_features (point-in-time, a row per person and day) through `through` (today, UTC)."""
    with lh.writing("user features"):
        return update_user_features(lh.spark, lh.settings, through or datetime.now(UTC).date(), start=start)


def quality_gate(lh: Lakehouse, layer: str) -> dict[str, Any]:
    """Validate the rows the layer's gated tables added since they last passed (raises QualityGateFailed)."""
    return check_layer(lh.spark, lh.settings, layer)


def replay(lh: Lakehouse, selection: Selection, dry_run: bool = False) -> ReplayResult:
    """Re-ingest selected bronze.quarantine rows after a fix, storing no event twice."""
    with lh.writing("replay-quarantine"):
        return replay_quarantine(lh.spark, lh.settings, selection, dry_run=dry_run)


# ------------------------------------------------------------------------------------------ simulated input


def simulator_defaults() -> dict[str, Any]:
    """simulate()'s keyword defaults: the one place the simulator's knobs are set."""
    return {n: p.default for n, p in inspect.signature(simulate).parameters.items() if p.default is not p.empty}


@dataclass(frozen=True)
class Simulated:
    summary: SimulationSummary
    seconds: float
    published: int | None  # records published to Kafka (None: written to the landing zone)


def simulate_events(settings: Settings, sink: str = "files", **knobs: Any) -> Simulated:
    """Simulate into the landing zone, or into an outbox that is then published to the Kafka topic."""
    started = datetime.now(UTC)
    to_kafka = sink == "kafka"
    target = settings.lakehouse / "_outbox" if to_kafka else settings.landing  # Kafka: an outbox, then removed
    summary = simulate(target, settings.truth, **knobs)
    published = None
    if to_kafka:
        files = sorted(target.glob("events-*.ndjson"))
        published = publish_files(build_spark(settings), settings, files)
        shutil.rmtree(target)
    return Simulated(summary, (datetime.now(UTC) - started).total_seconds(), published)


# ------------------------------------------------------------------------------------------------- reading

_READS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "VALUES", "TABLE", "FROM", "LIST")
_WRITE_PLAN = re.compile(r"InsertInto|Command|Merge|Update|Delete|Overwrite|Append|Write|Create|Drop|Alter")


class ReadOnlyError(PermissionError):
    """A statement that would change the lakehouse, given without write permission."""


def sql(lh: Lakehouse, query: str, write: bool = False) -> DataFrame:
    """Run a Spark SQL statement on the lakehouse tables. Without `write`, only statements that read run
    (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, VALUES ...); anything else is refused before it runs."""
    if not write:
        statement = re.sub(r"^(\s+|--[^\n]*(\n|$)|/\*.*?\*/)*", "", query, flags=re.DOTALL)
        keyword = (statement.split(None, 1) or [""])[0].rstrip("(;").upper()
        if keyword not in _READS:
            raise ReadOnlyError(
                f"{keyword or 'an empty statement'}: intentlake sql only reads (SELECT, WITH, SHOW, DESCRIBE ...) "
                "unless --write is given"
            )
        if keyword == "WITH":  # a CTE can lead into INSERT: look at the parsed plan's root, which runs nothing
            parsed = lh.spark.sql(f"EXPLAIN EXTENDED {statement}").first()[0].split("\n")
            root = next((line for line in parsed[1:] if line.strip()), "")
            if _WRITE_PLAN.search(root):
                raise ReadOnlyError("this WITH statement writes; intentlake sql only reads unless --write is given")
    return lh.spark.sql(query)


@dataclass(frozen=True)
class TableStatus:
    name: str
    rows: int
    location: Path
    producers: tuple[str, ...]
    gated_by: str | None


@dataclass(frozen=True)
class Status:
    tables: list[TableStatus]
    latest_batches: list[Any]  # ops.pipeline_runs rows: the latest batch of every job
    unread_landing: list[Path]  # landing-zone files bronze does not read (not a landing format)
    latest_syncs: list[Any] = ()  # ops.sync_runs rows: the latest run of every destination
    # the online store (None: not configured): each source table's applied version against the table's own,
    # the persons it holds, or why it could not be read
    online_store: dict[str, Any] | None = None
    services: dict[str, str] | None = None  # the collector and the decision API on their ports: what /healthz says


def _registered(name: str) -> tuple[tuple[str, ...], str | None]:
    info = table_info(name)
    return info.producers, info.gated_by


def _latest_per(runs: DataFrame, key: str, order: str) -> list[Any]:
    """The newest row of each `key` (a job, a destination) by `order`: one row per key, collected."""
    newest = runs.selectExpr("*", f"row_number() OVER (PARTITION BY {key} ORDER BY {order}) AS _n")
    return newest.where("_n = 1").orderBy(key).collect()


def status(lh: Lakehouse) -> Status:
    """Rows per table with who writes it, the latest batch of every job, and landing files bronze skips."""
    settings = lh.settings
    tables = [
        TableStatus(name, lh.table(name).count(), settings.table_path(name), *_registered(name)) for name in TABLES
    ]
    latest = _latest_per(lh.table("ops.pipeline_runs"), "job", "started_at DESC, batch_id DESC")
    syncs = _latest_per(lh.table("ops.sync_runs"), "destination", "started_at DESC")
    return Status(tables, latest, unread_files(settings.landing), syncs, _online_status(lh), service_status(settings))


def service_status(settings: Settings) -> dict[str, str]:
    """Whether the collector and the decision API answer on their ports (loopback), and what they say."""
    import json
    import urllib.request

    found = {}
    for name, port in (("collector", settings.collector_port), ("decision API", settings.api_port)):
        url = f"http://127.0.0.1:{port}"
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=0.5) as answer:
                health = json.load(answer)
            said = ", ".join(f"{k} {v}" for k, v in health.items() if k not in ("api", "collector"))
            found[name] = f"up at {url} ({said})"
        except (OSError, ValueError):
            found[name] = f"not answering at {url} (`intentlake serve {name.split()[-1].lower()}` or `make serve`)"
    return found


def _online_status(lh: Lakehouse) -> dict[str, Any] | None:
    if not lh.settings.redis_url:
        return None
    try:
        described = store.describe(lh.settings)
    except Exception as exc:  # status reports a store that does not answer; it does not fail for it
        return {"error": f"{type(exc).__name__}: {exc}"}
    for table, meta in described["sources"].items():
        meta["table_version"] = table_version(lh.spark, lh.settings, table)
    return described


@dataclass(frozen=True)
class DemoReport:
    counts: dict[str, int]
    bronze: Any
    quarantine: list[Any]
    sources: list[Any]  # bronze events by source kind: mapped and custom
    custom: list[Any]  # the most frequent custom event names
    moments: list[Any]
    silver: Any
    late_events: int
    merges: Any
    phases: list[Any]
    segments: list[Any]


def demo_report(lh: Lakehouse) -> DemoReport:
    """The figures `intentlake demo` prints: rows per table, bronze's accounting, quarantine reasons,
    micro-moments, silver's sessions and identity, and segments (aggregates only, a few rows each)."""
    spark = lh.spark
    return DemoReport(
        counts={name: lh.table(name).count() for name in TABLES},
        bronze=spark.sql(
            "SELECT sum(input_rows) i, sum(accepted_rows) a, sum(quarantined_rows) q, sum(duplicate_rows) d "
            "FROM ops.pipeline_runs WHERE job IN ('bronze', 'bronze-kafka')"
        ).first(),
        quarantine=spark.sql(
            "SELECT reason, count(*) n, min(detail) example FROM bronze.quarantine GROUP BY reason ORDER BY n DESC"
        ).collect(),
        sources=spark.sql(
            "SELECT source.kind kind, count(*) n, count_if(event_type = 'custom') custom FROM bronze.events "
            "GROUP BY 1 ORDER BY n DESC"
        ).collect(),
        custom=spark.sql(
            "SELECT event_name, count(*) n FROM bronze.events WHERE event_type = 'custom' GROUP BY 1 "
            "ORDER BY n DESC, event_name LIMIT 5"
        ).collect(),
        moments=spark.sql(
            "SELECT moment_type, count(*) n, count(DISTINCT session_id) s FROM silver.micro_moments "
            "GROUP BY moment_type ORDER BY n DESC"
        ).collect(),
        silver=spark.sql(
            "SELECT count(*) n, count_if(is_closed) closed, count(DISTINCT person_id) people, "
            "count_if(timezone_source = 'event') tz_event, count_if(timezone_source = 'geo') tz_geo, "
            "count_if(timezone_source = 'ip') tz_ip, count_if(sessionized_by = 'max_length') split "
            "FROM silver.sessions"
        ).first(),
        late_events=lh.table("silver.late_events").count(),
        merges=spark.sql(
            "SELECT count_if(status = 'active') a, count_if(status = 'undone') u FROM silver.identity_merges"
        ).first(),
        phases=spark.sql(
            "SELECT session_phase, device_type, count(*) n, round(avg(engaged_seconds)) engaged FROM silver.sessions "
            "GROUP BY 1, 2 ORDER BY n DESC LIMIT 8"
        ).collect(),
        segments=spark.sql(
            "SELECT segment, count(*) n, round(avg(intent_score), 1) score FROM gold.user_segments "
            "GROUP BY segment ORDER BY n DESC"
        ).collect(),
    )


# ------------------------------------------------------------------------------------------------- configs


def validate_config(settings: Settings, spark: SparkSession | None = None) -> list[str]:
    """Check every config file (raises InvalidConfigError naming the file, rule and problem); with a Spark
    session, segment rules also go through Spark's analyzer. Returns one line per file that passed."""
    model = load_scoring(settings.scoring_file)
    rules = load_segments(settings.segments_file)
    learned = load_models(settings.models_file)
    content = load_content_rules(settings.content_rules_file)
    kpis = load_kpi_config(settings.kpis_file)
    vocabulary = vocabulary_at(settings.event_vocabulary_file)
    destinations = configured_destinations(settings)
    SilverConfig.load(settings)  # micro-moment thresholds, context, IP time zones
    if spark is not None:
        check_rules_compile(spark, settings.segments_file, rules)
    return [
        f"{settings.scoring_file} ({model.model_version}, {len(model.signals)} signals)",
        f"{settings.segments_file} ({', '.join(r.name for r in rules)})",
        f"{settings.models_file} ({len(learned.features)} learned features, margin {learned.margin:g})",
        f"{settings.content_rules_file} ({len(content.rules)} rules for {', '.join(content.channels)}; live: "
        f"{', '.join(content.live_channels) or 'none'}; {len(content.places)} places)",
        f"{settings.kpis_file} (version {kpis.version}, targets from the seeds)",
        f"{settings.event_vocabulary_file} ({sum(len(v.events) + len(v.schemas) for _, v in vocabulary.sources)} "
        f"mappings; strict: {', '.join(n for n, v in vocabulary.sources if v.strict) or 'none'}; "
        f"{len(vocabulary.custom_features)} custom features)",
        f"{settings.destinations_file} ({', '.join(f'{d.name} ({d.type})' for d in destinations) or 'none'})",
        *(str(p) for p in (settings.micro_moments_file, settings.context_file, settings.ip_timezones_file)),
    ]


# ------------------------------------------------------------------------------------ what gold feeds on


def send_times(lh: Lakehouse, now: datetime | None = None) -> RhythmResult:
    """Rewrite gold.engagement_rhythm and gold.send_times from the window of sessions before `now`."""
    with lh.writing("send times"):
        return update_send_times(lh.spark, lh.settings, utc(now) if now else None)


def content_picks(lh: Lakehouse) -> ContentRun:
    """Evaluate config/content_rules.yaml for every person into gold.content_assignments."""
    rules = load_content_rules(lh.settings.content_rules_file)
    with lh.writing("content picks"):
        return assign_content(lh.spark, lh.settings, rules)


def profiles(lh: Lakehouse) -> ProfilesRun:
    """Rebuild silver.profiles (login, email, phone, consent per purpose) from bronze and the identity map."""
    with lh.writing("profiles"):
        return update_profiles(lh.spark, lh.settings)


@dataclass(frozen=True)
class AudienceRun:
    send_times: RhythmResult
    content: ContentRun
    profiles: ProfilesRun


def audience_inputs(lh: Lakehouse, now: datetime | None = None) -> AudienceRun:
    """Send times, then content picks (which carry each person's best send hour), and the persons'
    profiles: what a sync reads."""
    return AudienceRun(send_times(lh, now), content_picks(lh), profiles(lh))


class SyncFailed(RuntimeError):
    """One or more destinations' syncs failed (each recorded in ops.sync_runs); the others ran."""


def sync(
    lh: Lakehouse, names: Iterable[str] | None = None, mode: str = "diff", progress: Any = None
) -> list[SyncResult]:
    """Sync the named destinations (all when None) in config order: each sends what changed in its audience
    since its last acknowledged state (spark_jobs/activation/sync.py). A failing destination does not stop
    the others; SyncFailed names every one that failed once all have run."""
    configured = configured_destinations(lh.settings)
    wanted = list(names) if names is not None else [d.name for d in configured]
    by_name = {d.name: d for d in configured}
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        raise KeyError(f"no destination {', '.join(unknown)} in {lh.settings.destinations_file}; "
                       f"configured: {', '.join(by_name) or 'none'}")  # fmt: skip
    results: list[SyncResult] = []
    failed: list[str] = []
    for name in wanted:
        try:
            results.append(sync_destination(lh.spark, lh.settings, by_name[name], mode, progress=progress))
        except Exception as error:  # recorded in ops.sync_runs by sync_destination
            failed.append(f"{name} ({type(error).__name__}: {error})")
    if failed:
        raise SyncFailed("sync failed for " + "; ".join(failed))
    return results


@dataclass(frozen=True)
class DemoSync:
    result: SyncResult
    target: str  # where it went: "the account at <url>", "a local stand-in of the <vendor> API at <url>", a file
    holds: str | None  # what the local stand-in holds afterwards: "3 contacts", "2 signed messages" ...


def demo_syncs(lh: Lakehouse) -> list[DemoSync]:
    """What `intentlake demo` does with the destinations: each is synced for real. One whose token is set
    (INTENTLAKE_DEST_<NAME>_TOKEN) goes to its account; a file destination writes its file; any other goes
    to a local stand-in of its vendor's API (spark_jobs/activation/local_servers.py: the same contract the
    tests sync against), started for the demo with a throwaway token on loopback and stopped after."""
    import base64
    import os
    import secrets

    from spark_jobs.activation import local_servers
    from spark_jobs.activation.destinations import credentials

    done: list[DemoSync] = []
    for destination in configured_destinations(lh.settings):
        prefix = destination.env_prefix
        if destination.type == "file" or credentials(destination).token:
            result = sync_destination(lh.spark, lh.settings, destination)
            target = result.file or f"the account at {credentials(destination).url}"
            done.append(DemoSync(result, target, None))
            continue
        if destination.type == "webhook":
            token = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            server: local_servers.ContractServer = local_servers.WebhookReceiver(token)
        else:
            token = secrets.token_urlsafe(16)
            server = {"hubspot": local_servers.HubSpotServer, "braze": local_servers.BrazeServer,
                      "mailchimp": local_servers.MailchimpServer}[destination.type](token)  # fmt: skip
        saved = {k: os.environ.get(k) for k in (f"{prefix}_TOKEN", f"{prefix}_URL")}
        try:
            with server:
                os.environ[f"{prefix}_TOKEN"], os.environ[f"{prefix}_URL"] = token, server.url
                result = sync_destination(lh.spark, lh.settings, destination)
                kind = {"hubspot": "contacts", "braze": "users", "mailchimp": "members", "webhook": "messages"}
                held = f"{len(getattr(server, kind[destination.type]))} {kind[destination.type]}"
                done.append(DemoSync(result, f"a local stand-in of the {destination.type} API at {server.url}",
                                     held))  # fmt: skip
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return done


def local_redis(settings: Settings) -> tuple[Settings, str]:
    """Settings with an online store: INTENTLAKE_REDIS_URL when set, else a local Redis started by the project's
    own script (scripts/redis.sh, the `make redis-up` one) on its default port. Returns why not, when neither."""
    import subprocess

    if settings.redis_url:
        return settings, "INTENTLAKE_REDIS_URL"
    script = Path(__file__).resolve().parents[1] / "scripts" / "redis.sh"
    done = subprocess.run([str(script), "up"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        return settings, f"no local Redis ({(done.stderr or done.stdout).strip()[-300:]})"
    port = os.environ.get("INTENTLAKE_REDIS_PORT", "16379")
    url = f"redis://127.0.0.1:{port}/0"
    return replace(settings, redis_url=url), f"a local Redis (scripts/redis.sh) on port {port}"


@dataclass(frozen=True)
class DemoDecision:
    who: str  # "user u-42" or "anonymous visitor"
    asked: str  # what the page sent, in words
    decision: dict[str, Any]


def demo_decisions(lh: Lakehouse, persons: int = 3) -> list[DemoDecision]:
    """What the decision API answers for a few simulated persons (the highest scores among those who granted
    personalization and logged in) and for the seeds' pizza search: the same store reads and the same
    `Decider` the API uses, without a server."""
    from spark_jobs.serving.decisions import Decider, DecisionRequest

    settings = lh.settings
    decider = Decider.load(settings)
    consenting = lh.table("silver.profiles").where("consent_personalization AND user_id IS NOT NULL")
    top = (
        consenting.join(lh.table("gold.user_segments"), "person_id")
        .orderBy(F.desc("intent_score"), "person_id")
        .select("user_id")
        .limit(persons)
        .collect()
    )
    connection = store.client(settings)
    now = datetime.now(UTC)
    out = []
    try:
        for row in top:
            person_id = store.resolve(connection, settings, "user_id", row.user_id)
            record = store.person(connection, settings, person_id) if person_id else None
            request = DecisionRequest(user_id=row.user_id, local_time="19:05")
            out.append(DemoDecision(f"user {row.user_id}", "GET /api/content?time=19:05",
                                    decider.decide(record, request, now, person_id)))  # fmt: skip
        place = decider.rules.places[0] if decider.rules.places else None
        for clock, where, (lat, lon) in (("19:05", "near", (place.lat + 0.003, place.lon) if place else (None, None)),
                                         ("03:00", "far from", (43.2965, 5.3698))):  # fmt: skip
            request = DecisionRequest(anonymous_id="demo-visitor", local_time=clock, lat=lat, lon=lon,
                                      page_url="https://shop.example/search?q=best+pizza")  # fmt: skip
            said = f"'best pizza' at {clock} {where} {place.name if place else 'the shop'}"
            out.append(DemoDecision("anonymous visitor", said, decider.decide(None, request, now)))
    finally:
        connection.close()
    return out


def newest_session_end(lh: Lakehouse) -> datetime | None:
    """The newest session end in silver (a replayed or simulated day's "now"); None when there is none."""
    newest = lh.table("silver.sessions").agg({"session_end": "max"}).first()[0]
    return newest.replace(tzinfo=UTC) + timedelta(seconds=1) if newest else None


def evaluate_scores(lh: Lakehouse, truth: Path | None = None) -> Evaluation:
    """Gold's scores and segments against the simulator's ground truth (aggregates only)."""
    return evaluate(lh.spark, lh.settings, truth)


# ------------------------------------------------------------------------------------------------- models


def train_model(lh: Lakehouse, now: datetime | None = None, until: date | None = None) -> TrainResult:
    """Fit the learned model on point-in-time features and register it as a challenger."""
    if now is None:
        return train(lh.spark, lh.settings)
    return train(lh.spark, lh.settings, now=utc(now), until=until)


def promote(lh: Lakehouse, version: str) -> str | None:
    """Promote a challenger if it beats the champion by the margin on its held-out days (raises
    PromotionRefused otherwise); returns the version it retired."""
    return promote_version(lh.spark, lh.settings, version)


def rollback(lh: Lakehouse) -> tuple[str, str]:
    """Restore the champion retired last; (restored, retired)."""
    return models.rollback(lh.spark, lh.settings)


def model_listing(lh: Lakehouse) -> list[dict]:
    """The registry, newest first, as plain rows."""
    return models.as_listing(models.versions(lh.spark, lh.settings))


def tune(lh: Lakehouse, until: date, out_dir: Path | None = None) -> Proposal:
    """Propose signal weights and score thresholds fitted to recent outcomes (written beside config/)."""
    return propose(lh.spark, lh.settings, until, out_dir)


# --------------------------------------------------------------------------------------------------- KPIs


def kpis(lh: Lakehouse, day: date, as_of: datetime | None = None) -> KpiRun:
    """A UTC day's KPIs into gold.kpis_daily (that day's rows replaced)."""
    cfg = load_kpi_config(lh.settings.kpis_file)
    end = as_of or datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    with lh.writing("kpis"):
        return run_kpis(lh.spark, lh.settings, day, as_of=utc(end), cfg=cfg)


def data_docs(lh: Lakehouse) -> dict[str, Any]:
    """Validate every table's snapshot with its suite and rebuild the Data Docs site (counts only)."""
    return build_data_docs(lh.spark, lh.settings, lh.settings.data_docs_dir)


def kpi_report(lh: Lakehouse, day: date) -> Path:
    """Render the day's self-contained HTML report, linking the Data Docs site."""
    settings = lh.settings
    cfg = load_kpi_config(settings.kpis_file)
    return render_report(lh.spark, settings, day, settings.reports_dir / "kpi", settings.data_docs_dir / "index.html",
                         cfg)  # fmt: skip


# ------------------------------------------------------------------------------------- privacy, identity


def file_erasure(lh: Lakehouse, subject_type: str, subject: str, now: datetime | None = None) -> str:
    """File an erasure request (pending until processed); returns its id."""
    return file_request(lh.spark, lh.settings, subject_type, subject, utc(now or datetime.now(UTC)))


def erase(lh: Lakehouse, now: datetime | None = None) -> ErasureRun:
    """Carry out pending erasure requests and purge those past their purge time."""
    return process_erasures(lh.spark, lh.settings, utc(now or datetime.now(UTC)))


def erasure_receipt(lh: Lakehouse, request_id: str) -> dict:
    return receipt(lh.spark, lh.settings, request_id)


@dataclass(frozen=True)
class UndoneMerge:
    devices: int
    logins: int
    sessions_moved: int


def undo_merge(lh: Lakehouse, merge_id: str, reason: str) -> UndoneMerge:
    """Undo an identity merge by hand: its two sides are never linked again, and their sessions move back."""
    spark, settings = lh.spark, lh.settings
    with lh.writing("undo-merge"):
        changes = undo_identity_merge(spark, settings, merge_id, reason)
        nothing = spark.createDataFrame([], "session_id STRING, anonymous_id STRING")
        moved = reattribute(spark, settings, changes, lh.table("silver.identity_map"), nothing)
    return UndoneMerge(len(changes.anonymous_ids), len(changes.user_ids), moved)


# ---------------------------------------------------------------------------------------------- maintenance


def optimize_table(lh: Lakehouse, table: str) -> dict[str, Any]:
    """OPTIMIZE one table (compaction; Z-order where maintenance.ZORDER lists columns)."""
    done = optimize(lh.spark, lh.settings, table)
    return {"table": table, "files_removed": done.files_removed, "files_added": done.files_added,
            "zorder_by": list(done.zorder_by)}  # fmt: skip


def vacuum_table(lh: Lakehouse, table: str) -> dict[str, Any]:
    """VACUUM one table with the safe retention floor (7 days)."""
    return {"table": table, "files_deleted": vacuum(lh.spark, lh.settings, table)}


# -------------------------------------------------------------- what the DAG tasks return (XCom summaries)


def airflow() -> Lakehouse:
    """A Lakehouse for an Airflow task: settings from the worker's INTENTLAKE_* environment."""
    return Lakehouse(app_name="intentlake-airflow")


def layer_summary(run: LayerRun) -> dict[str, Any]:
    return {"layer": run.layer, "versions": run.versions}


def features_summary(result: UserFeaturesRun) -> dict[str, Any]:
    counts = result.counts
    return {"dates": [str(d) for d in (result.dates[0], result.dates[-1])] if result.dates else [],
            "inserted": counts.inserted, "updated": counts.updated, "deleted": counts.deleted,
            "held_back": result.held_back}  # fmt: skip


def audience_summary(run: AudienceRun) -> dict[str, Any]:
    start, end = run.send_times.window
    merge = run.content.merge
    return {
        "send_times": {"window": [start.isoformat(), end.isoformat()], "rhythm_rows": run.send_times.rhythm_rows,
                       "persons": dict(run.send_times.send_times)},
        "content": {"persons": run.content.persons, "rules_version": run.content.rules_version,
                    "inserted": merge.inserted, "updated": merge.updated, "deleted": merge.deleted},
        "profiles": profiles_summary(run.profiles),
    }  # fmt: skip


def online_summary(run: OnlineStoreRun) -> dict[str, Any]:
    """What an online-store run did, per source table (versions and counts; no person data)."""
    return {"seconds": round(run.seconds, 1), "written": run.written, "skipped": run.skipped,
            "sources": {s.table: {"mode": s.mode, "from": s.from_version, "to": s.to_version,
                                  "written": s.written, "skipped": s.skipped} for s in run.sources}}  # fmt: skip


def profiles_summary(run: ProfilesRun) -> dict[str, Any]:
    """Counts only: no email, phone or id reaches XCom or a log."""
    merge = run.merge
    return {"persons": run.persons, "with_email": run.with_email, "consenting": dict(run.consenting),
            "inserted": merge.inserted, "updated": merge.updated, "deleted": merge.deleted}  # fmt: skip


def train_summary(result: TrainResult) -> dict[str, Any]:
    return {
        "version": result.version,
        "training": [str(d) for d in result.training],
        "holdout": [str(d) for d in result.holdout],
        "training_rows": result.training_rows,
        "auc": result.challenger.auc,
        "champion": result.champion_version,
        "champion_auc": result.champion.auc,
    }


def train_for_interval(lh: Lakehouse, interval_end: datetime) -> TrainResult:
    """Train on the closed sessions up to the day before the interval end; the version is named after the
    interval end, so a retried run returns what the first attempt registered."""
    end = utc(interval_end)
    return train_model(lh, now=end, until=end.date() - timedelta(days=1))


def promote_or_keep(lh: Lakehouse, version: str) -> dict[str, Any]:
    """Promote `version` if it beats the champion by the margin on its held-out days; else keep the champion.
    Either way the decision and the figures are returned (and kept in ops.models)."""
    champion = models.champion_row(lh.spark, lh.settings)
    if champion is not None and champion.model_version == version:  # a retry after the promotion committed
        return {"decision": "promoted", "champion": version}
    try:
        retired = promote(lh, version)
    except models.PromotionRefused as refused:
        return {"decision": "kept", "champion": champion.model_version if champion else None, "why": str(refused)}
    return {"decision": "promoted", "champion": version, "retired": retired}


def tune_for_interval(lh: Lakehouse, interval_end: datetime) -> dict[str, Any]:
    """A proposal for the day the interval ends (the window ends the day before); a refusal is returned
    (status refused), not raised: there is nothing to retry."""
    until = utc(interval_end).date()
    try:
        return tune(lh, until).summary()
    except TuningRefused as refused:
        return {"status": "refused", "until": until.isoformat(), "why": str(refused)}


def kpis_for_interval(lh: Lakehouse, interval_end: datetime) -> dict[str, Any]:
    """The KPIs of the UTC day before the interval end."""
    end = utc(interval_end)
    done = kpis(lh, end.date() - timedelta(days=1), as_of=end)
    return {"day": done.day.isoformat(), "rows": done.rows, "table_version": done.version, "figures": done.figures}


def data_docs_summary(built: dict[str, Any]) -> dict[str, Any]:
    return {"index": str(built["index"]), "tables": len(built["tables"]), "failing": built["failing"],
            "skipped": list(built["skipped"])}  # fmt: skip


def erasure_summary(done: ErasureRun) -> dict[str, Any]:
    return {"erased": list(done.erased), "purged": list(done.purged), "rows_deleted": done.rows_deleted,
            "files_vacuumed": done.files_vacuumed}  # fmt: skip


# Every operation by the name table contracts use in `-- @producer:` (checked by tests/unit/test_registry.py).
OPERATIONS = {
    "bronze": run_layer,
    "silver": run_layer,
    "gold": run_layer,
    "features": update_features,
    "quality_gate": quality_gate,
    "replay_quarantine": replay,
    "send_times": send_times,
    "content_picks": content_picks,
    "profiles": profiles,
    "sync": sync,
    "kpis": kpis,
    "train": train_model,
    "promote": promote,
    "rollback": rollback,
    "erase": erase,
    "undo_merge": undo_merge,
}


# ------------------------------------------------------------------------------- privacy: raw IPs expire


def expire_ips(lh: Lakehouse, now: datetime | None = None) -> dict[str, Any]:
    """Cut bronze.events' context.ip to its /24 or /48 network on rows older than INTENTLAKE_IP_RETENTION_DAYS
    before `now` (the run's interval end); the XCom dict: rows changed and the retention applied."""
    from spark_jobs.maintenance import expire_ips as expire_bronze_ips

    rows = expire_bronze_ips(lh.spark, lh.settings, utc(now or datetime.now(UTC)))
    return {"table": "bronze.events", "rows_truncated": rows, "retention_days": lh.settings.ip_retention_days}
