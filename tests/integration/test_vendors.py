"""Each destination adapter against a local server that keeps the vendor's contract: batch limits, auth,
per-record errors for invalid emails, membership, erasure, and (webhooks) signatures with a replay window."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace

import pytest
import standardwebhooks

from spark_jobs.activation.destinations import Credentials, load_destinations
from spark_jobs.activation.local_servers import BrazeServer, Fault, HubSpotServer, MailchimpServer, WebhookReceiver
from spark_jobs.activation.transport import RetryPolicy
from spark_jobs.activation.vendors import Braze, HubSpot, Mailchimp, Member, Webhook, subscriber_hash, write_file
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.integration

DESTINATIONS = {d.name: d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml")}
POLICY = RetryPolicy(max_tries=4, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=2.0)
FAST = {"sleep": lambda s: time.sleep(min(s, 0.05))}
TOKEN = "test-token-0123"


def _members(n: int, bad: tuple[int, ...] = ()) -> list[Member]:
    return [
        Member(f"not-an-email-{i}" if i in bad else f"person{i}@example.com", {"intentlake_segment": "High Intent"})
        for i in range(n)
    ]


def _fast(destination):
    return replace(destination, options={**destination.options, "requests_per_second": 200})


def test_hubspot_upserts_by_email_reports_invalid_ones_and_keeps_list_membership():
    destination = _fast(DESTINATIONS["hubspot_high_intent"])
    with HubSpotServer(TOKEN) as server:
        hubspot = HubSpot(destination, Credentials(TOKEN, server.url), POLICY, **FAST)
        members = _members(10, bad=(2, 5, 7))
        outcome = hubspot.upsert(members)
        assert sorted(outcome.rejected) == ["not-an-email-2", "not-an-email-5", "not-an-email-7"]
        assert all("VALIDATION_ERROR" in reason for reason in outcome.rejected.values())
        assert len(outcome.acknowledged) == 7 and all(outcome.acknowledged.values())  # HubSpot's record ids
        assert server.lists["intentlake-high-intent"] == set(outcome.acknowledged.values())
        leaving = [Member(k, record_id=v) for k, v in list(outcome.acknowledged.items())[:2]]
        assert sorted(hubspot.remove(leaving).acknowledged) == sorted(m.key for m in leaving)
        assert len(server.lists["intentlake-high-intent"]) == 5 and len(server.contacts) == 7  # removed, not deleted
        gone = hubspot.delete(["person0@example.com", "never-synced@example.com"])
        assert sorted(gone.acknowledged) == ["never-synced@example.com", "person0@example.com"]
        assert "person0@example.com" not in server.contacts
        too_many = hubspot.upsert(_members(101))  # the caller chunks; the server enforces the vendor's limit
        assert len(too_many.rejected) == 101 and "Batch input limit is 100" in next(iter(too_many.rejected.values()))


def test_hubspot_secondly_limit_without_retry_after_is_retried_and_nothing_is_sent_twice():
    destination = _fast(DESTINATIONS["hubspot_high_intent"])
    with HubSpotServer(TOKEN, rate_limit=(3, 0.5)) as server:
        hubspot = HubSpot(destination, Credentials(TOKEN, server.url), RetryPolicy(max_tries=20, base_seconds=0.05,
                                                                                     cap_seconds=0.2))  # fmt: skip
        for start in range(0, 20, 5):
            assert not hubspot.upsert(_members(20)[start : start + 5]).rejected
        assert sorted(server.upserts) == sorted(m.key for m in _members(20))  # each exactly once
        assert hubspot.http.stats.throttled > 0 and any(status == 429 for _, status in server.refused)


def test_braze_tracks_by_external_id_or_email_with_per_object_errors_and_deletes():
    by_email = replace(_fast(DESTINATIONS["braze_consideration"]), match_key="email")
    with BrazeServer(TOKEN) as server:
        braze = Braze(by_email, Credentials(TOKEN, server.url), POLICY, **FAST)
        outcome = braze.upsert(_members(6, bad=(1, 4)))
        assert sorted(outcome.rejected) == ["not-an-email-1", "not-an-email-4"]
        assert "not a valid email" in outcome.rejected["not-an-email-1"]
        assert server.users["person0@example.com"] == {
            "intentlake_segment": "High Intent",
            "intentlake_in_audience": True,
        }
        braze.remove([Member("person0@example.com")])
        assert server.users["person0@example.com"]["intentlake_in_audience"] is False
        assert len(braze.upsert(_members(76)).rejected) == 76  # over 75 objects: the vendor's 400
        assert sorted(braze.delete(["person0@example.com", "person2@example.com"]).acknowledged) == [
            "person0@example.com", "person2@example.com"]  # fmt: skip
        assert "person0@example.com" not in server.users
    by_id = _fast(DESTINATIONS["braze_consideration"])
    with BrazeServer(TOKEN) as server:
        Braze(by_id, Credentials(TOKEN, server.url), POLICY, **FAST).upsert(
            [Member("u-42", {"intentlake_tone": "warm"})]
        )
        assert server.received[0].body["attributes"][0]["external_id"] == "u-42"


def test_mailchimp_batch_upsert_tags_by_subscriber_hash_and_deletes_permanently():
    destination = _fast(DESTINATIONS["mailchimp_price_sensitive"])
    with MailchimpServer(TOKEN + "-us21") as server:
        mailchimp = Mailchimp(destination, Credentials(TOKEN + "-us21", server.url), POLICY, **FAST)
        outcome = mailchimp.upsert(_members(5, bad=(3,)))
        assert (
            list(outcome.rejected) == ["not-an-email-3"]
            and "looks fake or invalid" in outcome.rejected["not-an-email-3"]
        )
        member = server.members[subscriber_hash("Person0@Example.com")]  # MD5 of the lower-cased email
        assert member["tags"] == {"intentlake-price-sensitive"} and member["status"] == "transactional"
        mailchimp.remove([Member("person0@example.com")])
        assert member["tags"] == set() and subscriber_hash("person0@example.com") in server.members  # untagged only
        assert mailchimp.delete(["person0@example.com"]).acknowledged == {"person0@example.com": None}
        assert subscriber_hash("person0@example.com") not in server.members
        assert len(mailchimp.upsert(_members(501)).rejected) == 501


def test_mailchimp_tags_a_whole_batch_in_one_call_by_the_tags_segment_id():
    destination = _fast(DESTINATIONS["mailchimp_price_sensitive"])
    destination = replace(destination, options={**destination.options, "tag_id": "7001"})
    with MailchimpServer(TOKEN + "-us21") as server:
        mailchimp = Mailchimp(destination, Credentials(TOKEN + "-us21", server.url), POLICY, **FAST)
        outcome = mailchimp.upsert(_members(300, bad=(3,)))
        assert list(outcome.rejected) == ["not-an-email-3"] and len(outcome.acknowledged) == 299
        assert len(server.received) == 2  # the batch upsert and one segment call, not 299 tag calls
        assert server.received[1].path == "/lists/a1b2c3d4e5/segments/7001"
        assert all(m["segments"] == {"7001"} for m in server.members.values())
        left = mailchimp.remove([Member("person0@example.com"), Member("never-added@example.com")])
        assert list(left.acknowledged) == ["person0@example.com"]  # the stand-in names the one not on the list
        assert "not on the list" in left.rejected["never-added@example.com"]
        assert server.members[subscriber_hash("person0@example.com")]["segments"] == set()


def test_webhook_batches_verify_with_the_secret_and_fail_with_a_wrong_one_or_an_old_timestamp():
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    destination = _fast(DESTINATIONS["webhook_all_segments"])
    with WebhookReceiver(secret) as receiver:
        webhook = Webhook(destination, Credentials(secret, receiver.url), POLICY, **FAST)
        assert len(webhook.upsert(_members(3)).acknowledged) == 3
        assert webhook.delete(["person1@example.com"]).acknowledged == {"person1@example.com": None}
        assert [m["type"] for m in receiver.messages] == ["intentlake.audience.upsert", "intentlake.person.erased"]
        first = receiver.received[0]
        headers = {k.lower(): v for k, v in first.headers.items() if k.lower().startswith("webhook-")}
        verifier = standardwebhooks.Webhook(secret)
        assert verifier.verify(first.raw.decode(), headers) == json.loads(first.raw)  # verifies with the secret
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
            standardwebhooks.Webhook("whsec_" + "A" * 32).verify(first.raw.decode(), headers)
        old = {**headers, "webhook-timestamp": str(int(time.time()) - 600)}
        with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError, match="too old"):
            verifier.verify(first.raw.decode(), old)
    with WebhookReceiver("whsec_" + "B" * 32) as receiver:  # the receiver holds another secret: 401 -> stopped
        from spark_jobs.activation.transport import DestinationAuthError

        with pytest.raises(DestinationAuthError):
            Webhook(destination, Credentials(secret, receiver.url), POLICY, **FAST).upsert(_members(1))


def test_a_retried_webhook_batch_keeps_its_id_so_the_receiver_can_drop_the_duplicate():
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with WebhookReceiver(secret) as receiver:
        webhook = Webhook(
            _fast(DESTINATIONS["webhook_all_segments"]), Credentials(secret, receiver.url), POLICY, **FAST
        )
        receiver.faults.append(Fault(503))
        webhook.upsert(_members(2))
        webhook.upsert(_members(2))  # the same batch again (a sync resumed after a crash)
        assert len({m["id"] for m in receiver.messages}) == 1 and len(receiver.messages) == 2


def test_file_destination_writes_the_audience_and_a_manifest_atomically(tmp_path):
    destination = DESTINATIONS["file_high_intent"]
    target = write_file(destination, tmp_path, _members(3), source_version=12)
    with target.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["key"] for r in rows] == ["person0@example.com", "person1@example.com", "person2@example.com"]
    manifest = json.loads((tmp_path / "file_high_intent.manifest.json").read_text())
    assert (manifest["rows"], manifest["gold_version"], manifest["file"]) == (3, 12, "file_high_intent.csv")
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind
    parquet = replace(destination, options={**destination.options, "format": "parquet"})
    import pyarrow.parquet as pq

    assert pq.read_table(write_file(parquet, tmp_path, _members(2), 13)).num_rows == 2


def test_batches_in_flight_together_through_a_429_storm_and_5xx_each_arrive_once_in_order():
    from types import SimpleNamespace

    from spark_jobs.activation.sync import in_flight

    destination = replace(DESTINATIONS["braze_consideration"], options={
        **DESTINATIONS["braze_consideration"].options, "requests_per_second": 400, "concurrency": 4})  # fmt: skip
    calls = [SimpleNamespace(key=f"u-{i}", record_id=None, fields_json='{"intentlake_tone": "warm"}')
             for i in range(1500)]  # fmt: skip
    batches = [calls[i : i + 75] for i in range(0, 1500, 75)]
    with BrazeServer(TOKEN, rate_limit=(40, 0.2)) as server:  # 200/s allowed: the 400/s asked is throttled
        server.faults.extend([Fault(429, retry_after="0")] * 5 + [Fault(503)] * 3)
        patient = RetryPolicy(max_tries=30, base_seconds=0.01, cap_seconds=0.1, timeout_seconds=2.0)
        braze = Braze(destination, Credentials(TOKEN, server.url), patient, **FAST)
        answered = list(in_flight(braze, destination, batches, "upsert", destination.concurrency))
        assert [rows for rows, _ in answered] == batches  # outcomes come back in the batches' order
        assert all(not outcome.rejected and len(outcome.acknowledged) == 75 for _, outcome in answered)
        assert sorted(server.tracked) == sorted(c.key for c in calls)  # each exactly once
        assert braze.http.stats.throttled >= 5 and braze.http.stats.server_errors >= 3
