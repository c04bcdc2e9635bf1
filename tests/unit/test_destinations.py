"""config/destinations.yaml: the shipped examples load, and each mistake is refused naming the
destination and the key; secrets come from the environment only."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from spark_jobs.activation.destinations import credentials, load_destinations
from spark_jobs.config import load_segments
from spark_jobs.errors import InvalidConfigError
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.unit

CONFIG = REPO_ROOT / "config" / "destinations.yaml"
SEGMENTS = tuple(r.name for r in load_segments(REPO_ROOT / "config" / "segments.yaml"))


def _load(tmp_path: Path, change) -> None:
    doc = copy.deepcopy(yaml.safe_load(CONFIG.read_text()))
    change(doc)
    path = tmp_path / "destinations.yaml"
    path.write_text(yaml.safe_dump(doc))
    load_destinations(path, SEGMENTS)


def test_the_shipped_examples_cover_every_type_and_hubspot_high_intent():
    destinations = {d.name: d for d in load_destinations(CONFIG, SEGMENTS)}
    assert {d.type for d in destinations.values()} == {"hubspot", "braze", "mailchimp", "webhook", "file"}
    high = destinations["hubspot_high_intent"]
    assert (high.segments, high.match_key, high.consent) == (("High Intent",), "email", "marketing")
    assert high.batch_size == 100


def _dest(doc, name):
    return next(d for d in doc["destinations"] if d["name"] == name)


@pytest.mark.parametrize(
    ("change", "where", "problem"),
    [
        (lambda d: _dest(d, "hubspot_high_intent")["options"].update(batch_size=101),
         "destination 'hubspot_high_intent': options: batch_size", "1 to 100 (the hubspot API's limit)"),
        (lambda d: _dest(d, "braze_consideration")["options"].update(batch_size=76),
         "destination 'braze_consideration': options: batch_size", "1 to 75"),
        (lambda d: _dest(d, "mailchimp_price_sensitive")["options"].update(batch_size=501),
         "destination 'mailchimp_price_sensitive': options: batch_size", "1 to 500"),
        (lambda d: _dest(d, "hubspot_high_intent")["audience"].update(segments=["Hi Intent"]),
         "destination 'hubspot_high_intent': audience: segments", "'Hi Intent' is not a segment"),
        (lambda d: _dest(d, "hubspot_high_intent")["audience"].update(filter="email_hash IS NOT NULL"),
         "destination 'hubspot_high_intent': audience: filter", "unknown column(s) ['email_hash']"),
        (lambda d: _dest(d, "hubspot_high_intent")["audience"].update(filter="reflect('java.lang.System', 'exit')"),
         "destination 'hubspot_high_intent': audience: filter", "reflect() is not allowed"),
        (lambda d: _dest(d, "hubspot_high_intent").update(consent="sales"),
         "destination 'hubspot_high_intent': consent", "'sales' is not one of analytics, marketing, personalization"),
        (lambda d: _dest(d, "hubspot_high_intent").update(match_key="phone"),
         "destination 'hubspot_high_intent': match_key", "not one of email, user_id"),
        (lambda d: _dest(d, "hubspot_high_intent")["fields"].update(email_hash="x"),
         "destination 'hubspot_high_intent': fields: email_hash", "not an audience column"),
        (lambda d: _dest(d, "hubspot_high_intent")["options"].update(token="secret"),
         "destination 'hubspot_high_intent': options: token", "not an option of hubspot"),
        (lambda d: _dest(d, "mailchimp_price_sensitive")["options"].pop("list_id"),
         "destination 'mailchimp_price_sensitive': options: list_id", "required"),
        (lambda d: _dest(d, "webhook_all_segments")["options"].pop("url"),
         "destination 'webhook_all_segments': options: url", "INTENTLAKE_DEST_WEBHOOK_ALL_SEGMENTS_URL"),
        (lambda d: _dest(d, "file_high_intent")["options"].update(format="xlsx"),
         "destination 'file_high_intent': options: format", "not one of csv, parquet"),
        (lambda d: d["destinations"].append(dict(_dest(d, "file_high_intent"), name="FILE_HIGH_INTENT")),
         "destination 'FILE_HIGH_INTENT'", "defined twice"),
        (lambda d: _dest(d, "file_high_intent").update(name="file-high"),
         "destination #5: name", "letters, digits and _"),
        (lambda d: _dest(d, "braze_consideration").update(type="salesforce"),
         "destination 'braze_consideration': type", "not one of hubspot, braze, mailchimp, webhook, file"),
    ],
)  # fmt: skip
def test_a_mistake_is_refused_naming_the_destination_and_key(tmp_path, change, where, problem):
    with pytest.raises(InvalidConfigError) as caught:
        _load(tmp_path, change)
    assert caught.value.where == where and problem in caught.value.problem


def test_secrets_and_urls_come_from_the_environment_and_never_show(monkeypatch):
    destinations = {d.name: d for d in load_destinations(CONFIG, SEGMENTS)}
    env = {
        "INTENTLAKE_DEST_HUBSPOT_HIGH_INTENT_TOKEN": "pat-eu1-secret",
        "INTENTLAKE_DEST_HUBSPOT_HIGH_INTENT_URL": "https://api-eu1.hubapi.com/",
        "INTENTLAKE_DEST_MAILCHIMP_PRICE_SENSITIVE_TOKEN": "0123abcd-us21",
    }
    hubspot = credentials(destinations["hubspot_high_intent"], env)
    assert (hubspot.token, hubspot.url) == ("pat-eu1-secret", "https://api-eu1.hubapi.com")
    assert "secret" not in repr(hubspot) and "secret" not in str(destinations["hubspot_high_intent"])
    assert credentials(destinations["mailchimp_price_sensitive"], env).url == "https://us21.api.mailchimp.com/3.0"
    assert credentials(destinations["braze_consideration"], env) == credentials(destinations["braze_consideration"], {})


def test_two_syncs_of_one_destination_never_run_at_once(tmp_path):
    from dataclasses import replace as with_

    from spark_jobs.activation.sync import destination_lock, sync
    from spark_jobs.locks import LockTimeout
    from spark_jobs.settings import Settings

    settings = with_(Settings.from_env().with_root(tmp_path / "lakehouse"), lock_timeout_seconds=1)
    [hubspot] = [d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml") if d.type == "hubspot"]
    with destination_lock(settings, hubspot.name):  # a sync of it in progress
        with pytest.raises(LockTimeout, match=r"sync hubspot_high_intent: no exclusive hold on .*sync-hubspot"):
            sync(None, settings, hubspot)  # the second waits its timeout and gives up before touching anything
    other = next(d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml") if d.type == "braze")
    with destination_lock(settings, hubspot.name), destination_lock(settings, other.name):
        pass  # another destination's lock is its own
