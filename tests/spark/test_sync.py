"""Segment syncs against local servers that keep each vendor's contract: the audience (segments, consent,
a match key, the filter), the fields sent, only changes sent again, refusals recorded and retried, a
consent withdrawal removing the person, dry runs sending nothing, files written whole, and every run in
ops.sync_runs. The gold and silver inputs are written directly (no pipeline run), so each case is exact."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from datetime import datetime

import pytest
from delta.tables import DeltaTable

from spark_jobs.activation.destinations import load_destinations
from spark_jobs.activation.local_servers import HubSpotServer, WebhookReceiver
from spark_jobs.activation.sync import sync
from spark_jobs.activation.transport import DestinationAuthError, RetryPolicy
from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.settings import REPO_ROOT
from tests.helpers import table

pytestmark = pytest.mark.spark

DESTINATIONS = {d.name: d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml")}
TOKEN = "test-token-0123"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
POLICY = RetryPolicy(max_tries=4, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=5.0)
NOW = datetime(2026, 11, 3, 12, 0)

# person: (segment, intent_score, email, user_id, consent_marketing, consent_personalization)
PEOPLE = {
    "p1": ("High Intent", 91.0, "one@example.com", "u-1", True, True),
    "p2": ("High Intent", 88.0, "two@example.com", "u-2", False, True),  # no marketing consent
    "p3": ("High Intent", 85.0, None, "u-3", True, True),  # no email
    "p4": ("Price Sensitive", 40.0, "four@example.com", "u-4", True, True),
    "p5": ("High Intent", 82.0, "not-an-email", "u-5", True, True),  # HubSpot refuses it
}


def _write(spark, settings, name, rows):
    contract = table_contract(name)
    frame = spark.createDataFrame([tuple(r.get(c) for c in contract.column_names) for r in rows], contract.schema())
    frame.write.format("delta").mode("overwrite").save(str(settings.table_path(name)))


def _lakehouse(spark, settings, people):
    ensure_tables(spark, settings)
    segments, scores, times, profiles = [], [], [], []
    for person, (segment, score, email, user_id, marketing, personalization) in people.items():
        session = f"s-{person}"
        segments.append({"person_id": person, "segment": segment, "intent_score": score, "session_id": session,
                         "last_seen_at": NOW, "sessions": 2, "model_version": "rules-v1"})  # fmt: skip
        scores.append({"session_id": session, "person_id": person, "session_start": NOW, "session_end": NOW,
                       "is_closed": True, "intent_score": score, "segment": segment, "model_version": "rules-v1",
                       "contributions": {"cart_add": 40.0, "product_views": 30.0, "dwell": 15.0, "bounce": 0.0,
                                         "search": 6.0},
                       "session_date": NOW.date()})  # fmt: skip
        times.append({"person_id": person, "best_local_hour": 9, "timezone": "Europe/Paris", "source": "person",
                      "confidence": 0.5, "sessions": 2, "segment": segment, "window_end": NOW})  # fmt: skip
        profiles.append({"person_id": person, "user_id": user_id, "email": email, "consent_analytics": True,
                         "consent_marketing": marketing, "consent_personalization": personalization,
                         "consent_updated_at": NOW, "consent_source": "segment", "updated_at": NOW})  # fmt: skip
    _write(spark, settings, "gold.user_segments", segments)
    _write(spark, settings, "gold.session_scores", scores)
    _write(spark, settings, "gold.send_times", times)
    _write(spark, settings, "silver.profiles", profiles)


def test_a_hubspot_sync_sends_the_consenting_audience_once_retries_refusals_and_removes_a_withdrawal(
    spark, settings, monkeypatch
):
    _lakehouse(spark, settings, PEOPLE)
    destination = replace(DESTINATIONS["hubspot_high_intent"], options={
        **DESTINATIONS["hubspot_high_intent"].options, "requests_per_second": 100})  # fmt: skip
    with HubSpotServer(TOKEN) as server:
        monkeypatch.setenv("INTENTLAKE_DEST_HUBSPOT_HIGH_INTENT_TOKEN", "revoked-token")
        monkeypatch.setenv("INTENTLAKE_DEST_HUBSPOT_HIGH_INTENT_URL", server.url)
        with pytest.raises(DestinationAuthError):  # stops the destination, names the cause, changes no state
            sync(spark, settings, destination, policy=POLICY)
        assert table(spark, settings, "ops.sync_state").count() == 0 and not server.upserts
        monkeypatch.setenv("INTENTLAKE_DEST_HUBSPOT_HIGH_INTENT_TOKEN", TOKEN)

        first = sync(spark, settings, destination, policy=POLICY)
        assert (first.status, first.audience, first.upserts, first.removals) == ("succeeded", 2, 2, 0)
        assert (first.acknowledged, first.rejected) == (1, 1)
        assert server.upserts == ["one@example.com"]  # p2 (no consent), p3 (no email), p4 (segment): never sent
        contact = server.contacts["one@example.com"]["properties"]
        assert contact["intentlake_segment"] == "High Intent" and contact["intentlake_intent_score"] == "91"
        assert contact["intentlake_top_signals"] == "cart_add,product_views,dwell"  # the three largest
        assert contact["intentlake_best_send_hour"] == "9"
        record = server.contacts["one@example.com"]["id"]
        assert server.lists["intentlake-high-intent"] == {record}
        state = {r.person_id: r for r in table(spark, settings, "ops.sync_state").collect()}
        assert set(state) == {"p1"} and state["p1"].record_id == record and state["p1"].in_audience
        [refused] = table(spark, settings, "ops.sync_rejections").collect()
        assert (refused.person_id, refused.action, refused.run_id) == ("p5", "upsert", first.run_id)
        assert "VALIDATION_ERROR" in refused.reason

        again = sync(spark, settings, destination, policy=POLICY)  # nothing changed: only the refusal again
        assert (again.upserts, again.unchanged, again.acknowledged, again.rejected) == (1, 1, 0, 1)
        assert server.upserts == ["one@example.com"]

        dry = sync(spark, settings, destination, mode="dry_run", policy=POLICY)
        assert (dry.status, dry.upserts) == ("dry_run", 1) and dry.stats.requests == 0

        withdrawn = DeltaTable.forPath(spark, str(settings.table_path("silver.profiles")))
        withdrawn.update("person_id = 'p1'", {"consent_marketing": "false"})
        left = sync(spark, settings, destination, policy=POLICY)
        assert (left.removals, left.acknowledged) == (1, 1)
        assert server.lists["intentlake-high-intent"] == set() and "one@example.com" in server.contacts
        assert not table(spark, settings, "ops.sync_state").first().in_audience

        full = sync(spark, settings, destination, mode="full", policy=POLICY)  # p1 is out: nobody to resend
        assert (full.upserts, full.removals, full.acknowledged) == (1, 0, 0)  # p5: a full run tries dead letters

        segments = DeltaTable.forPath(spark, str(settings.table_path("gold.user_segments")))
        segments.update("person_id = 'p4'", {"segment": "'High Intent'"})  # a mover joins the audience
        moved = sync(spark, settings, destination, policy=POLICY)
        assert (moved.added, moved.updated, moved.removals, moved.dead_lettered) == (1, 0, 0, 1)
        assert server.upserts == ["one@example.com", "four@example.com"]  # p5: refused thrice, not sent again

    refusals = table(spark, settings, "ops.sync_rejections").orderBy("tries").collect()
    assert [(r.person_id, r.tries, r.dead_letter) for r in refusals] == [
        ("p5", 1, False), ("p5", 2, False), ("p5", 3, True), ("p5", 4, True)
    ]  # fmt: skip
    runs = table(spark, settings, "ops.sync_runs").orderBy("started_at").collect()
    assert [(r.mode, r.status) for r in runs] == [("diff", "failed"), ("diff", "succeeded"), ("diff", "succeeded"),
                                                  ("dry_run", "dry_run"), ("diff", "succeeded"),
                                                  ("full", "succeeded"), ("diff", "succeeded")]  # fmt: skip
    assert "DestinationAuthError" in runs[0].error and "revoked-token" not in runs[0].error
    from spark_jobs.operations import _latest_per  # what `intentlake status` shows per destination

    [last] = _latest_per(table(spark, settings, "ops.sync_runs"), "destination", "started_at DESC")
    assert (last.destination, last.run_id, last.added) == ("hubspot_high_intent", runs[-1].run_id, 1)
    assert runs[1].requests >= 2 and runs[1].gold_version < runs[-1].gold_version


def test_a_webhook_sync_signs_each_batch_a_file_sync_writes_the_whole_audience_and_erasure_reaches_both(
    spark, online_settings, monkeypatch
):
    from spark_jobs import erasure
    from spark_jobs.serving import online_store

    settings = online_settings  # the online store too: erasure reaches it as well
    _lakehouse(spark, settings, PEOPLE)
    online_store.update_online_store(spark, settings)
    connection = online_store.client(settings)
    assert online_store.person(connection, settings, "p1")["segment"] == "High Intent"
    webhook = replace(DESTINATIONS["webhook_all_segments"], options={
        **DESTINATIONS["webhook_all_segments"].options, "batch_size": 2, "requests_per_second": 100})  # fmt: skip
    file_export = DESTINATIONS["file_high_intent"]
    with WebhookReceiver(SECRET) as receiver:
        monkeypatch.setenv("INTENTLAKE_DEST_WEBHOOK_ALL_SEGMENTS_TOKEN", SECRET)
        monkeypatch.setenv("INTENTLAKE_DEST_WEBHOOK_ALL_SEGMENTS_URL", receiver.url)
        done = sync(spark, settings, webhook, policy=POLICY)
        # everyone with personalization consent and a user_id, in batches of two, each verified by the receiver
        assert (done.audience, done.acknowledged) == (5, 5) and len(receiver.messages) == 3
        sent = {m["key"]: m["fields"] for message in receiver.messages for m in message["members"]}
        assert set(sent) == {"u-1", "u-2", "u-3", "u-4", "u-5"}
        assert sent["u-4"]["segment"] == "Price Sensitive" and sent["u-4"]["tone"] is None  # no content pick
        assert sync(spark, settings, webhook, policy=POLICY).upserts == 0 and len(receiver.messages) == 3

        exported = sync(spark, settings, file_export)
        with open(exported.file) as fh:
            rows = list(csv.DictReader(fh))
        assert [r["key"] for r in rows] == ["not-an-email", "one@example.com"]  # a file refuses nothing
        assert rows[1] == {"key": "one@example.com", "segment": "High Intent", "intent_score": "91",
                           "best_local_hour": "9"}  # fmt: skip
        folder = settings.lakehouse / "exports" / "high_intent"
        manifest = json.loads((folder / "file_high_intent.manifest.json").read_text())
        assert manifest["rows"] == 2 and manifest["gold_version"] == exported.gold_version
        state = table(spark, settings, "ops.sync_state").groupBy("destination").count().collect()
        assert {r.destination: r["count"] for r in state} == {"webhook_all_segments": 5, "file_high_intent": 2}

        # erasure reaches both copies before it deletes the state: a signed person.erased, the file rewritten
        request = erasure.file_request(spark, settings, "person_id", "p1", NOW)
        erasure.process_erasures(spark, settings, NOW)
        erased = [m for m in receiver.messages if m["type"] == "intentlake.person.erased"]
        assert [m["members"] for m in erased] == [[{"key": "u-1"}]]
    with open(exported.file) as fh:
        assert [r["key"] for r in csv.DictReader(fh)] == ["not-an-email"]
    assert json.loads((folder / "file_high_intent.manifest.json").read_text())["rows"] == 1
    receipt = erasure.receipt(spark, settings, request)
    assert receipt["destinations"] == {"file_high_intent": 1, "webhook_all_segments": 1}
    assert receipt["online_store"] == {"keys_deleted": 1}  # p1's hash (it has no ids in this lakehouse)
    assert online_store.person(connection, settings, "p1") is None
    assert online_store.person(connection, settings, "p2") is not None
    # the erasure's deletes come through the feed and leave no key behind that names p1
    assert {s.table: s.written for s in online_store.update_online_store(spark, settings).sources}[
        "gold.user_segments"] == 1  # fmt: skip
    assert not connection.exists(settings.redis_prefix + "p:p1")
    connection.close()
    assert table(spark, settings, "ops.sync_state").where("person_id = 'p1'").count() == 0


def test_a_sync_killed_mid_run_resumes_from_its_journal_and_sends_nothing_acknowledged_twice(
    spark, settings, monkeypatch
):
    import os
    import signal
    import time

    from spark_jobs.activation.sync import journal_dir
    from tests.faults import start_job

    people = {f"k{i:04d}": ("High Intent", 80.0 + i % 20, f"k{i:04d}@example.com", f"u-{i}", True, True)
              for i in range(600)}  # fmt: skip
    _lakehouse(spark, settings, people)
    journal = journal_dir(settings, "hubspot_high_intent")
    with HubSpotServer(TOKEN) as server:
        prefix = "INTENTLAKE_DEST_HUBSPOT_HIGH_INTENT"
        # batches of 100 at HubSpot's 10 requests/s (an upsert and a list call each), a state commit every 300
        env = {f"{prefix}_TOKEN": TOKEN, f"{prefix}_URL": server.url, "INTENTLAKE_SYNC_COMMIT_EVERY": "300"}
        job = start_job(settings, "sync", "hubspot_high_intent", extra_env=env)
        deadline = time.monotonic() + 300
        state = settings.table_path("ops.sync_state") / "_delta_log"
        # kill -9 once a state commit is in and acknowledgements after it sit in the journal only
        while time.monotonic() < deadline and job.poll() is None:
            commits = len(list(state.glob("*.json"))) - 1  # version 0 is the CREATE
            if commits >= 1 and len(server.upserts) >= 400 and list(journal.glob("*.json")):
                break
            time.sleep(0.02)
        assert job.poll() is None, "the sync ended before it could be killed"
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        time.sleep(1)  # a request the server had read in full before the kill is still being answered
        committed = {r.person_id for r in table(spark, settings, "ops.sync_state").collect()}
        entries = [row for p in journal.glob("*.json") for row in json.loads(p.read_text())["state"]]
        acknowledged = committed | {row["person_id"] for row in entries}  # in Delta or in the journal
        sent_before = len(server.upserts)
        assert len(committed) >= 300 and len(acknowledged) >= 400 and len(acknowledged) <= sent_before < 600

        for name, value in env.items():
            monkeypatch.setenv(name, value)
        resumed = sync(spark, settings, DESTINATIONS["hubspot_high_intent"], policy=POLICY)
        assert resumed.status == "succeeded" and resumed.recovered == len(entries)
        assert resumed.upserts == 600 - len(acknowledged)  # only what the destination had not acknowledged
        assert set(server.contacts) == {p[2] for p in people.values()}  # everyone at HubSpot
        assert server.lists["intentlake-high-intent"] == {c["id"] for c in server.contacts.values()}
        resent = len(server.upserts) - 600
        assert resent == sent_before - len(acknowledged) <= 100  # at most the batch whose answer the kill cut off
    assert table(spark, settings, "ops.sync_state").count() == 600 and not list(journal.glob("*.json"))
    runs = {r.status for r in table(spark, settings, "ops.sync_runs").collect()}
    assert runs == {"succeeded"}  # the killed run never wrote its row; the resumed one did
