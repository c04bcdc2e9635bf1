"""The Airflow DAGs: they parse without Spark and are documented; on one simulated lakehouse, `dag.test()`
runs of lakehouse_pipeline (a failing quality gate stops the layers downstream, naming the expectation; a
fixed suite lets the next run through), kpi_report (gold.kpis_daily and the HTML report) and
lakehouse_maintenance (an erasure request: the person is gone from every layer and from time travel).

Every DAG that writes is also killed mid-task (SIGKILL to the dag.test process and its Spark JVM, once the task's
first commit is in) on a twin: a copy of the lakehouse taken just before the clean run of the same DAG. The
twin is then retried as Airflow retries a lost task (what had succeeded stays done; the killed task and those
after it run again) and must end with the clean run's tables (tests/helpers.rows: all but bookkeeping columns).

Airflow runs in a subprocess (tests/dag_runner.py) with its own AIRFLOW_HOME: it loads its configuration
once per process, and the DAG tasks build their Spark session from the INTENTLAKE_* environment.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from spark_jobs.settings import REPO_ROOT, Settings
from spark_jobs.simulate import simulate
from tests.dag_runner import airflow_env, killed_and_retried, migrate, new_commit, run_dag, run_python
from tests.helpers import rows, table

pytestmark = pytest.mark.integration


PARSE = """
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag()
dags = {d.dag_id: {"doc": bool(d.doc_md and len(d.doc_md) > 200), "tags": sorted(d.tags), "owner": d.owner,
                   "retries": min(t.retries for t in d.tasks), "tasks": len(d.tasks)} for d in bag.dags.values()}
print(json.dumps({"errors": bag.import_errors, "dags": dags, "spark": "pyspark" in sys.modules,
                  "parse_seconds": sum(s.duration.total_seconds() for s in bag.dagbag_stats)}))
"""


def test_the_dags_parse_without_spark_and_are_documented(tmp_path, settings):
    done = run_python(airflow_env(tmp_path / "airflow", settings.lakehouse), "-c", PARSE)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"dags folder parsed in {report['parse_seconds']:.2f} s (Airflow's own per-file timings)")
    assert report["errors"] == {}
    assert not report["spark"]  # no DAG file imports Spark at parse time
    assert set(report["dags"]) == {
        "lakehouse_pipeline", "retrain_intent_model", "lakehouse_maintenance", "kpi_report", "tune_signals",
        "audience_inputs", "segment_sync",
    }  # fmt: skip
    for dag_id, dag in report["dags"].items():
        assert dag["doc"], f"{dag_id} has no Markdown doc"
        assert "intentlake" in dag["tags"] and dag["owner"] == "data-platform", dag_id
        assert dag["retries"] >= 1, dag_id


@pytest.fixture(scope="module")
def piped(spark, tmp_path_factory, redis_url):
    """600 simulated events through lakehouse_pipeline twice: first with a tightened identity-map suite (the
    silver gate fails), then with the shipped suites (user features run in it); then audience_inputs, the DAG
    scheduled on gold.user_segments (send times and content picks)."""
    root = tmp_path_factory.mktemp("dags")
    settings = replace(Settings.from_env().with_root(root / "lakehouse"), shuffle_partitions=2)
    simulate(settings.landing, settings.truth, events=600, seed=3, lines_per_file=300)
    strict = root / "strict"
    shutil.copytree(REPO_ROOT / "expectations", strict)
    suite = json.loads((strict / "silver_identity_map.json").read_text())
    for item in suite["expectations"]:
        if item["kwargs"].get("column") == "identifier_type":
            item["kwargs"]["value_set"] = ["anonymous_id"]  # logins now fail the suite
    (strict / "silver_identity_map.json").write_text(json.dumps(suite))
    env = airflow_env(root / "airflow", settings.lakehouse, strict)
    migrate(env)
    failed, failed_log = run_dag(env, "lakehouse_pipeline")
    gold_after_failure = table(spark, settings, "gold.session_scores").count()
    _snapshot(settings, root / "before_pipeline")
    # the suite fixed: the next run re-checks the same rows (the gate's mark did not move) and goes through
    passed, _ = run_dag(airflow_env(root / "airflow", settings.lakehouse), "lakehouse_pipeline")
    _snapshot(settings, root / "before_audience")
    online = {"INTENTLAKE_REDIS_URL": str(redis_url), "INTENTLAKE_REDIS_PREFIX": "dags:"}
    audience, audience_log = run_dag(
        airflow_env(root / "airflow", settings.lakehouse) | online, "audience_inputs", "2026-11-04T00:00:00+00:00"
    )
    return SimpleNamespace(settings=settings, root=root, failed=failed, failed_log=failed_log, redis_url=redis_url,
                           gold_after_failure=gold_after_failure, passed=passed, audience=audience,
                           audience_log=audience_log)  # fmt: skip


def _snapshot(settings: Settings, root) -> None:
    """A copy of the lakehouse as it is now, for a twin (`_twin`) to start from."""
    shutil.copytree(settings.lakehouse, root / "lakehouse")


def _twin(piped, name: str, **env: str) -> SimpleNamespace:
    """The lakehouse `_snapshot` copied to `name`, with an Airflow home of its own (Assets are keyed by the
    lakehouse's location, so the twin cannot share the original's metadata database)."""
    settings = replace(piped.settings.with_root(piped.root / name / "lakehouse"), shuffle_partitions=2)
    twin_env = airflow_env(piped.root / name / "airflow", settings.lakehouse) | env
    migrate(twin_env)
    return SimpleNamespace(settings=settings, env=twin_env)


def _killed_and_retried(
    twin, dag_id: str, logical_date: str, *tables: str, rerun: tuple[str, ...] = ()
) -> dict[str, str]:
    """Kill the twin's run of the DAG once one of `tables` has a new commit, then retry it (tests/dag_runner)."""
    when = new_commit(*(twin.settings.table_path(t) for t in tables))
    return killed_and_retried(twin.env, dag_id, logical_date, when, rerun)


def _assert_same_tables(spark, twin, original, tables) -> None:
    for name in tables:
        assert rows(spark, twin.settings, name) == rows(spark, original, name), f"{name} differs from the clean run"


def test_a_failing_gate_stops_downstream_and_a_fixed_suite_lets_the_run_through(spark, piped):
    settings = piped.settings
    assert piped.failed["state"] == "failed"
    assert piped.failed["tasks"] == {
        "bronze": "success", "gate_bronze": "success", "silver": "success", "gate_silver": "failed",
        "user_features": "upstream_failed", "gold": "upstream_failed", "gate_gold": "upstream_failed",
    }  # fmt: skip
    assert "silver quality gate failed" in piped.failed_log
    assert "silver.identity_map: expect_column_values_to_be_in_set(identifier_type) failed for" in piped.failed_log
    assert piped.gold_after_failure == 0

    assert piped.passed["state"] == "success", piped.passed
    sessions = table(spark, settings, "silver.sessions").count()
    assert sessions > 0 and table(spark, settings, "gold.session_scores").count() == sessions
    marks = {r.table_name: r for r in table(spark, settings, "ops.quality_gates").collect()}
    assert marks["silver.identity_map"].checked_rows == table(spark, settings, "silver.identity_map").count()
    assert {"bronze.events", "silver.sessions", "gold.session_scores", "gold.user_segments"} <= marks.keys()
    # the features gold's segments read were produced by the same run, through today
    # (up to the day of the earliest session still open: later rows would not be final)
    features = table(spark, settings, "silver.user_features")
    sessions = table(spark, settings, "silver.sessions")
    open_day = sessions.where("NOT is_closed").selectExpr("to_date(min(session_end))").first()[0]
    assert features.count() > 0
    assert features.agg({"as_of_date": "max"}).first()[0] == (open_day or datetime.now(UTC).date())


PIPELINE_TABLES = (
    "bronze.events", "bronze.quarantine", "silver.sessions", "silver.micro_moments", "silver.identity_map",
    "silver.identity_edges", "silver.identity_merges", "silver.late_events", "silver.user_features",
    "gold.session_scores", "gold.user_segments", "gold.user_segments_history", "ops.quality_gates",
    "ops.pipeline_runs",
)  # fmt: skip


def test_the_pipeline_killed_in_gold_and_retried_leaves_the_tables_of_the_clean_run(spark, piped):
    # In the clean run bronze had nothing new (and so its gate nothing to check); in the twin bronze would take
    # the copied landing files for new ones (Spark's file source knows files by absolute path). So both are
    # marked done in the twin; the comparison of bronze's tables, its run records and the gate marks below
    # shows they did nothing in the clean run either.
    twin = _twin(piped, "before_pipeline", DAG_RUNNER_SKIP="^(bronze|gate_bronze)$")
    killed = _killed_and_retried(twin, "lakehouse_pipeline", "2026-11-03T00:00:00+00:00", "gold.session_scores")
    assert killed["gold"] == "running" and killed["user_features"] == "success"
    assert table(spark, twin.settings, "gold.session_scores").count() > 0
    _assert_same_tables(spark, twin, piped.settings, PIPELINE_TABLES)


def test_audience_inputs_run_on_gold_segments_and_write_send_times_content_picks_and_profiles(spark, piped):
    settings = piped.settings
    tasks = {"send_times": "success", "content_picks": "success", "profiles": "success", "online_store": "success"}
    assert piped.audience == {"state": "success", "tasks": tasks}, piped.audience_log[-3000:]
    logins = table(spark, settings, "silver.identity_map").filter("identifier_type = 'user_id'").count()
    assert 0 < table(spark, settings, "silver.profiles").filter("user_id IS NOT NULL").count() <= logins
    persons = table(spark, settings, "gold.user_segments").count()
    assert table(spark, settings, "gold.send_times").count() == persons > 0
    picks = table(spark, settings, "gold.content_assignments")
    assert 0 < picks.select("person_id").distinct().count() <= persons
    # the DAG's last task brought the online store up to those tables: every person, as gold has them
    from spark_jobs.serving import online_store

    online = replace(settings, redis_url=str(piped.redis_url), redis_prefix="dags:")
    connection = online_store.client(online)
    for row in table(spark, settings, "gold.user_segments").collect():
        record = online_store.person(connection, online, row.person_id)
        assert (record["segment"], record["intent_score"]) == (row.segment, row.intent_score), row.person_id
        assert "best_local_hour" in record and "consent_marketing" in record
    with_picks = {r.person_id for r in picks.select("person_id").distinct().collect()}
    assert all(online_store.person(connection, online, p)["content"] for p in with_picks)
    anonymous = table(spark, settings, "silver.identity_map").filter("identifier_type = 'anonymous_id'").first()
    assert online_store.resolve(connection, online, "anonymous_id", anonymous.identifier) == anonymous.person_id
    connection.close()

    # killed once gold.engagement_rhythm is written, before gold.send_times, and retried
    twin = _twin(piped, "before_audience")
    killed = _killed_and_retried(twin, "audience_inputs", "2026-11-04T00:00:00+00:00", "gold.engagement_rhythm")
    assert killed["send_times"] == "running"
    audience = ("gold.engagement_rhythm", "gold.send_times", "gold.content_assignments", "silver.profiles")
    _assert_same_tables(spark, twin, settings, audience)


def test_kpi_report_writes_the_days_kpis_and_a_report_whose_images_render(spark, piped):
    import matplotlib.image

    settings = piped.settings
    _snapshot(settings, piped.root / "before_kpi")
    result, log = run_dag(
        airflow_env(piped.root / "airflow", settings.lakehouse), "kpi_report", "2026-11-04T00:00:00+00:00"
    )
    assert result == {"state": "success", "tasks": {"compute_kpis": "success", "data_docs": "success",
                                                    "render_report": "success"}}, log[-3000:]  # fmt: skip
    day = date(2026, 11, 3)  # the day before the run's interval end
    kpis = {(r.kpi, r.dimension): r for r in table(spark, settings, "gold.kpis_daily").collect()}
    assert {r.kpi_date for r in table(spark, settings, "gold.kpis_daily").collect()} == {day}
    assert kpis["intent_accuracy", "all"].denominator > 0 and kpis["micro_conversion_rate", "all"].denominator > 0
    assert any(kpi == "segment_size" for kpi, _ in kpis) and any(kpi == "engagement_by_hour" for kpi, _ in kpis)

    report = settings.reports_dir / "kpi" / f"kpi_report_{day}.html"
    page = report.read_text()
    accuracy = kpis["intent_accuracy", "all"]
    assert f"{100 * accuracy.value:.1f} %" in page and f"{accuracy.numerator} / {accuracy.denominator}" in page
    assert "Micro-conversion rate" in page and "not measured" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 4
    for data in images:
        pixels = matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert min(pixels.shape[:2]) > 100 and pixels.std() > 0
    docs = settings.reports_dir / "data_docs" / "index.html"
    assert docs.exists() and 'href="../data_docs/index.html"' in page
    assert "gold_kpis_daily" in docs.read_text()

    # killed once the day's KPIs are committed, before the task reports them, and retried
    twin = _twin(piped, "before_kpi")
    killed = _killed_and_retried(twin, "kpi_report", "2026-11-04T00:00:00+00:00", "gold.kpis_daily")
    assert killed["compute_kpis"] == "running"
    _assert_same_tables(spark, twin, settings, ["gold.kpis_daily"])


def _parquet_text(path) -> str:
    import pyarrow.parquet as pq

    return str(pq.read_table(path).to_pylist())


def test_maintenance_erases_a_person_from_every_layer_and_from_time_travel(spark, piped):
    from spark_jobs import erasure
    from spark_jobs.privacy import hash_key

    settings = piped.settings
    # a logged-in person in every layer (person ids are keyed per lakehouse, so pick by what they have,
    # not by id order: some persons only have sessions on a day whose features are not final yet)
    logins = table(spark, settings, "silver.identity_map").where("identifier_type = 'user_id'")
    in_all = (
        logins.join(table(spark, settings, "silver.user_features").select("person_id").distinct(), "person_id")
        .join(table(spark, settings, "gold.send_times").select("person_id").distinct(), "person_id")
        .join(table(spark, settings, "gold.user_segments").select("person_id"), "person_id")
    )
    chosen = in_all.orderBy("identifier").first()
    assert chosen, "no logged-in person has features, send times and a segment: nothing to erase from every layer"
    user_id = chosen.identifier
    ids = erasure.resolve(spark, settings, "user_id", user_id)
    where = erasure.conditions(ids)
    before = {t: table(spark, settings, t).where(where[t]).count() for t in where}
    assert before["bronze.events"] and before["silver.sessions"] and before["gold.session_scores"]
    assert before["gold.user_segments"] == 1 and before["silver.user_features"] and before["gold.send_times"]
    totals = {t: table(spark, settings, t).count() for t in where}
    # the version of each table that shows them now: time travel to it must not, once they are purged
    showing = {t: spark.sql(f"DESCRIBE HISTORY delta.`{settings.table_path(t)}` LIMIT 1").first().version
               for t, n in before.items() if n}  # fmt: skip
    request = erasure.file_request(spark, settings, "user_id", user_id, datetime.now(UTC))
    assert erasure.file_request(spark, settings, "user_id", user_id, datetime.now(UTC)) == request

    _snapshot(settings, piped.root / "before_erasure")  # the request filed, nothing erased yet
    env = airflow_env(piped.root / "airflow", settings.lakehouse) | {"INTENTLAKE_ERASURE_PURGE_HOURS": "0"}
    # the erase task only: optimize and vacuum have their own test (tests/spark/test_maintenance.py)
    result, log = run_dag(env, "lakehouse_maintenance", "2026-11-05T00:00:00+00:00", skip="^(optimize|vacuum)$")
    assert result["state"] == "success" and result["tasks"]["erase"] == "success", log[-3000:]

    # no row in any layer, and only theirs went
    for name, condition in where.items():
        assert table(spark, settings, name).where(condition).count() == 0, name
        assert table(spark, settings, name).count() == totals[name] - before[name], name
    receipt = erasure.receipt(spark, settings, request)
    subject = erasure.subject_hash("user_id", user_id, hash_key(settings))  # keyed: HMAC-SHA256
    assert receipt["status"] == "purged" and receipt["subject_sha256"] == subject
    assert {t: n for t, n in receipt["rows_deleted"].items() if t != "landing"} == before
    assert receipt["rows_deleted"]["landing"] > 0
    assert table(spark, settings, "ops.erasure_requests").where("subject IS NOT NULL").count() == 0

    # time travel no longer shows them: the versions that did are unreadable (their files were vacuumed) or,
    # had a version kept its files, would have to hold none of their rows
    for name, version in showing.items():
        old = spark.read.format("delta").option("versionAsOf", version).load(str(settings.table_path(name)))
        try:
            held = old.where(where[name]).count()
        except Exception as exc:  # the version's files were vacuumed: it cannot be read at all
            assert re.search(r"FILE_NOT_EXIST|FileNotFound|does not exist|DELTA_FILE_NOT_FOUND", str(exc)), exc
            continue
        assert held == 0, (name, version)
    # and no data file left anywhere (Change Data Feed files included) nor landing line names them
    names = sorted(ids.texts | ids.person_ids)
    for path in settings.lakehouse.rglob("*.parquet"):
        if "_checkpoints" in path.parts:
            continue
        text = _parquet_text(path)
        assert not any(n in text for n in names), path
    for path in settings.landing.rglob("*"):
        if path.is_file():
            assert not any(n.encode() in path.read_bytes() for n in names), path

    # killed once the first table has lost the person's rows (the identity map may be gone before the rest),
    # and retried: the same rows go, the receipt counts them all and the purge reaches every table
    twin = _twin(piped, "before_erasure", INTENTLAKE_ERASURE_PURGE_HOURS="0", DAG_RUNNER_SKIP="^(optimize|vacuum)$")
    killed = _killed_and_retried(twin, "lakehouse_maintenance", "2026-11-05T00:00:00+00:00", *before)
    assert killed["erase"] == "running"
    _assert_same_tables(spark, twin, settings, [*where, "ops.erasure_requests"])
    assert erasure.receipt(spark, twin.settings, request) == erasure.receipt(spark, settings, request)
    assert _landing_lines(twin.settings) == _landing_lines(settings)


def _landing_lines(settings: Settings) -> list[bytes]:
    return sorted(line for p in settings.landing.rglob("*") if p.is_file() for line in p.read_bytes().splitlines())


def test_segment_sync_sends_every_destination_its_consenting_audience(spark, piped):
    from spark_jobs.activation.vendors import subscriber_hash

    settings = piped.settings
    _snapshot(settings, piped.root / "before_sync")
    with _vendors() as (hubspot, braze, mailchimp, webhook, credentials):
        env = airflow_env(piped.root / "airflow", settings.lakehouse) | credentials
        result, log = run_dag(env, "segment_sync", "2026-11-04T00:00:00+00:00")
    assert result == {"state": "success", "tasks": {"destinations": "success", "sync": "success"}}, log[-3000:]

    runs = {r.destination: r for r in table(spark, settings, "ops.sync_runs").collect()}
    assert set(runs) == {"hubspot_high_intent", "braze_consideration", "mailchimp_price_sensitive",
                         "webhook_all_segments", "file_high_intent"}  # fmt: skip
    assert all(r.status == "succeeded" and r.rejected == 0 and r.acknowledged == r.added for r in runs.values())
    state = table(spark, settings, "ops.sync_state")
    held = {d: {r.match_value for r in state.where(f"destination = '{d}' AND in_audience").collect()} for d in runs}
    # what each server holds is what the state says it acknowledged, and only consenting persons with a key
    assert held["webhook_all_segments"]  # every segment, by user_id: the 600 simulated events have such persons
    assert set(hubspot.contacts) == held["hubspot_high_intent"]
    assert set(braze.users) == held["braze_consideration"]
    assert {m["email_address"] for m in mailchimp.members.values()} == held["mailchimp_price_sensitive"]
    assert all(subscriber_hash(e) in mailchimp.members for e in held["mailchimp_price_sensitive"])
    assert {m["key"] for msg in webhook.messages for m in msg["members"]} == held["webhook_all_segments"]
    profiles = table(spark, settings, "silver.profiles")
    marketing = {r.email for r in profiles.where("consent_marketing AND email IS NOT NULL").collect()}
    assert held["hubspot_high_intent"] <= marketing and held["mailchimp_price_sensitive"] <= marketing
    segments = {r.person_id: r.segment for r in table(spark, settings, "gold.user_segments").collect()}
    assert {segments[r.person_id] for r in state.where("destination = 'hubspot_high_intent'").collect()} <= {
        "High Intent"
    }
    export = settings.lakehouse / "exports" / "high_intent" / "file_high_intent.csv"
    assert len(export.read_text().splitlines()) == 1 + len(held["file_high_intent"])
    assert TOKEN not in log and SECRET not in log  # no secret in the task logs

    # killed once the first acknowledgements are committed, and retried: each destination holds what the clean
    # run's does, and the state says so
    twin = _twin(piped, "before_sync")
    with _vendors() as (twin_hubspot, twin_braze, twin_mailchimp, twin_webhook, credentials):
        twin.env |= credentials
        # destinations (config only, writes nothing) runs again to hand the retry's new DAG run its list
        killed = _killed_and_retried(
            twin, "segment_sync", "2026-11-04T00:00:00+00:00", "ops.sync_state", rerun=("destinations",)
        )
    assert "running" in killed["sync"].split(",")
    _assert_same_tables(spark, twin, settings, ["ops.sync_state"])
    assert twin_hubspot.contacts == hubspot.contacts and twin_braze.users == braze.users
    assert twin_mailchimp.members == mailchimp.members
    assert {m["key"] for msg in twin_webhook.messages for m in msg["members"]} == held["webhook_all_segments"]
    twin_export = twin.settings.lakehouse / "exports" / "high_intent" / "file_high_intent.csv"
    assert twin_export.read_text() == export.read_text()


TOKEN, SECRET = "dag-token-0123", "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@contextlib.contextmanager
def _vendors():
    """Local HubSpot, Braze, Mailchimp and webhook servers, and the environment that points the configured
    destinations at them."""
    from spark_jobs.activation.local_servers import BrazeServer, HubSpotServer, MailchimpServer, WebhookReceiver

    with HubSpotServer(TOKEN) as hubspot, BrazeServer(TOKEN) as braze, MailchimpServer(TOKEN) as mailchimp, \
            WebhookReceiver(SECRET) as webhook:  # fmt: skip
        servers = {"HUBSPOT_HIGH_INTENT": hubspot, "BRAZE_CONSIDERATION": braze,
                   "MAILCHIMP_PRICE_SENSITIVE": mailchimp, "WEBHOOK_ALL_SEGMENTS": webhook}  # fmt: skip
        credentials = {}
        for name, server in servers.items():
            credentials[f"INTENTLAKE_DEST_{name}_TOKEN"] = SECRET if server is webhook else TOKEN
            credentials[f"INTENTLAKE_DEST_{name}_URL"] = server.url
        yield hubspot, braze, mailchimp, webhook, credentials
