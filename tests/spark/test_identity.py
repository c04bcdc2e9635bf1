"""Identity resolution on real Delta tables: evidence from bronze, the map, merges and undos."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable

from spark_jobs.contracts import ensure_tables, table_contract
from spark_jobs.merge import MergeCounts
from spark_jobs.privacy import hash_key, keyed_hash
from spark_jobs.silver.identity import (
    IDENTITY_TABLES,
    Ident,
    UnknownMergeError,
    identity_config_file,
    load_identity_config,
    merge_edges,
    neighbourhood,
    person_id_of,
    plan_identities,
    read_merges,
    resolve_identities,
    undo_merge,
    with_person_id,
    write_identities,
)
from tests.helpers import table

pytestmark = pytest.mark.spark

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
IP, UA = "203.0.113.7", "Mozilla/5.0 (iPhone)"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pid(settings, kind: str, value: str) -> str:
    """The person id the lakehouse's own hash key gives an identifier."""
    return person_id_of(Ident(kind, value), hash_key(settings))


def ev(event_id: str, anon: str, minutes: float, user=None, props=None, ip=None, ua=None) -> dict:
    when = at(minutes)
    return {
        "event_id": event_id, "event_type": "page_view", "occurred_at": when, "received_at": when,
        "user_id": user, "anonymous_id": anon, "session_id": None,
        "device": {"type": "mobile", "os": "iOS", "user_agent": ua},
        "context": {"ip": ip, "locale": None, "timezone": "UTC", "geo": None},
        "page": {"url": None, "path": "/", "referrer": None}, "properties": props or {}, "consent": [],
        "source": {"kind": "web_sdk", "sdk": None, "version": None}, "schema_version": 1,
        "event_date": when.date(), "ingested_at": when, "source_file": "f", "ingest_batch": "q/0",
    }  # fmt: skip


@pytest.fixture
def lake(spark, settings):
    """Empty bronze.events and identity tables; returns a function that lands a batch in bronze."""
    ensure_tables(spark, settings, ("bronze.events", *IDENTITY_TABLES))

    def land(*events: dict):
        batch = spark.createDataFrame(list(events), table_contract("bronze.events").schema())
        batch.write.format("delta").mode("append").save(str(settings.table_path("bronze.events")))
        return batch

    return land


def version(spark, settings, name: str) -> int:
    return DeltaTable.forPath(spark, str(settings.table_path(name))).history(1).first().version


def test_edges_from_two_batches_count_each_event_once_even_when_a_batch_is_rerun(spark, settings, lake):
    first = lake(
        ev("e1", "a1", 0, user="u1", props={"email": " Ann@Example.COM "}, ip=IP, ua=UA),
        ev("e2", "a1", 5, user="u1", ip=IP, ua=UA),
        ev("e3", "a2", 7, props={"device_fingerprint": "fp-1", "email_hash": "ABC123"}, ip=IP),  # no user agent
    )
    merge_edges(spark, settings, first)
    second = lake(
        ev("e4", "a1", 30, user="u1"),
        ev("e5", "a1", 31, user=" "),
        ev("e6", "a3", 40, props={"device_fingerprint": "fp-1"}),
    )
    merge_edges(spark, settings, second)
    assert merge_edges(spark, settings, first) == MergeCounts(0, 0, 0)  # a replayed batch changes nothing

    key = hash_key(settings)
    expected = spark.createDataFrame(
        [
            ("a1", "anonymous_id", "a1", at(0), at(31), 4),  # the device itself: all of its events
            ("a1", "email_hash", keyed_hash(sha("ann@example.com"), key), at(0), at(0), 1),  # keyed, of the plain hash
            ("a1", "ip_ua", keyed_hash(f"{IP}|{UA}", key), at(0), at(5), 2),  # keyed too: an IP is personal
            ("a1", "user_id", "u1", at(0), at(30), 3),
            ("a2", "anonymous_id", "a2", at(7), at(7), 1),
            ("a2", "email_hash", keyed_hash("abc123", key), at(7), at(7), 1),
            ("a2", "fingerprint", "fp-1", at(7), at(7), 1),
            ("a3", "anonymous_id", "a3", at(40), at(40), 1),
            ("a3", "fingerprint", "fp-1", at(40), at(40), 1),
        ],
        table_contract("silver.identity_edges").schema(),
    )
    edges = table(spark, settings, "silver.identity_edges")
    assert_df_equality(edges, expected, ignore_row_order=True, ignore_nullable=True)
    assert not any("example" in str(value).lower() for row in edges.collect() for value in row)  # no raw email


def test_a_raw_and_a_hashed_email_of_one_address_link_under_a_keyed_identifier(spark, settings, lake):
    plain = sha("ann@example.com")  # what an ad platform or a client SDK sends as email_hash
    events = lake(
        ev("e1", "a1", 0, props={"email": " Ann@Example.COM "}),
        ev("e2", "a2", 10, props={"email_hash": plain.upper()}),
        ev("e3", "a3", 20, props={"email": "bob@example.com"}),
        ev("e4", "a4", 30, props={"trait.email": "ann@example.com"}),  # a Segment identify's traits.email
    )
    merge_edges(spark, settings, events)
    resolve_identities(spark, settings)

    identity_map = {
        (r.identifier_type, r.identifier): r for r in table(spark, settings, "silver.identity_map").collect()
    }
    stored = keyed_hash(plain, hash_key(settings))
    assert identity_map[("anonymous_id", "a1")].person_id == identity_map[("anonymous_id", "a2")].person_id
    assert identity_map[("anonymous_id", "a2")].method == "email_hash"
    assert identity_map[("anonymous_id", "a4")].person_id == identity_map[("anonymous_id", "a1")].person_id
    assert identity_map[("anonymous_id", "a3")].person_id != identity_map[("anonymous_id", "a1")].person_id
    assert ("email_hash", stored) in identity_map
    values = {r.identifier for r in table(spark, settings, "silver.identity_edges").collect()}
    assert plain not in values and sha("bob@example.com") not in values  # no bare sha256 anyone could recompute


def test_resolution_writes_the_map_and_a_second_run_without_new_evidence_commits_nothing(spark, settings, lake):
    events = lake(
        ev("e1", "a1", 0, user="u1", ip=IP, ua=UA),
        ev("e2", "a2", 10, user="u1"),
        ev("e3", "a3", 20, ip=IP, ua=UA),  # same IP + user agent 20 minutes later
        ev("e4", "a4", 30, props={"device_fingerprint": "fp-9"}),
    )
    merge_edges(spark, settings, events)
    changes = resolve_identities(spark, settings)

    u1 = pid(settings, "user_id", "u1")
    ip_ua = keyed_hash(f"{IP}|{UA}", hash_key(settings))  # a3 was attached by it: the map says which value
    expected = spark.createDataFrame(
        [
            ("anonymous_id", "a1", u1, "login", 1.0, at(0), at(0), ""),
            ("anonymous_id", "a2", u1, "login", 1.0, at(10), at(10), ""),
            ("anonymous_id", "a3", u1, "ip_ua", 0.6, at(20), at(20), ip_ua),
            ("anonymous_id", "a4", pid(settings, "anonymous_id", "a4"), "self", 1.0, at(30), at(30), ""),
            ("user_id", "u1", u1, "self", 1.0, at(0), at(10), ""),
        ],
        table_contract("silver.identity_map").schema(),
    )
    assert_df_equality(
        table(spark, settings, "silver.identity_map"), expected, ignore_row_order=True, ignore_nullable=True
    )
    assert (changes.anonymous_ids, changes.user_ids) == ({"a1", "a2", "a3"}, set())  # a4 keeps its own id

    before = {name: version(spark, settings, name) for name in IDENTITY_TABLES}
    again = resolve_identities(spark, settings)
    assert again.is_empty
    assert {name: version(spark, settings, name) for name in IDENTITY_TABLES} == before


def _merges(spark, settings) -> dict[str, dict]:
    return {r.merge_id: r.asDict() for r in table(spark, settings, "silver.identity_merges").collect()}


def _person(spark, settings, kind: str, value: str) -> str:
    rows = table(spark, settings, "silver.identity_map").filter(
        f"identifier_type = '{kind}' AND identifier = '{value}'"
    )
    return rows.first().person_id


def _story_until_merge(spark, settings, lake) -> str:
    """a2 browses alone, then shows up behind a1's IP + user agent: merged into u1's person. Its merge_id."""
    merge_edges(
        spark, settings, lake(ev("e1", "a1", 0, user="u1", ip=IP, ua=UA), ev("e2", "a2", 200, ip="198.51.100.1", ua=UA))
    )
    resolve_identities(spark, settings)
    merge_edges(spark, settings, lake(ev("e3", "a2", 25, ip=IP, ua=UA)))
    changes = resolve_identities(spark, settings)
    (merge_id,) = changes.merged
    assert changes.anonymous_ids == {"a2"}
    return merge_id


def test_a_merge_and_its_undo_by_later_evidence_are_recorded(spark, settings, lake):
    merge_id = _story_until_merge(spark, settings, lake)
    merge = _merges(spark, settings)[merge_id]
    assert (merge["kept_person_id"], merge["retired_person_id"]) == (
        pid(settings, "user_id", "u1"),
        pid(settings, "anonymous_id", "a2"),
    )
    assert (merge["method"], merge["confidence"], merge["status"]) == ("ip_ua", 0.6, "active")
    assert merge["evidence"]["path"] == "anonymous_id:a2 -[ip_ua 0.6]- anonymous_id:a1 -[login 1]- user_id:u1"

    map_version = version(spark, settings, "silver.identity_map")
    merge_edges(spark, settings, lake(ev("e4", "a2", 300, user="u2")))  # a2 logs in as someone else
    changes = resolve_identities(spark, settings)

    assert changes.undone == (merge_id,) and changes.anonymous_ids == {"a2"}
    undone = _merges(spark, settings)[merge_id]
    assert (undone["status"], undone["undone_by"]) == ("undone", "evidence")
    assert "both sides have a different login" in undone["undone_reason"]
    assert _person(spark, settings, "anonymous_id", "a2") == pid(settings, "user_id", "u2")
    feed = (
        spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", map_version + 1)
        .load(str(settings.table_path("silver.identity_map"))).collect()
    )  # fmt: skip
    assert {(r.identifier, r._change_type) for r in feed} == {
        ("a2", "update_preimage"),
        ("a2", "update_postimage"),
        ("u2", "insert"),
    }  # a1 and u1 are untouched


def test_a_manual_undo_separates_the_sides_and_keeps_them_apart(spark, settings, lake):
    merge_id = _story_until_merge(spark, settings, lake)
    with pytest.raises(UnknownMergeError, match="has no merge_id 'm-nope'"):
        undo_merge(spark, settings, "m-nope", "typo")

    changes = undo_merge(spark, settings, merge_id, "support ticket 42: a2 is the neighbour's phone")
    undone = _merges(spark, settings)[merge_id]
    assert (undone["status"], undone["undone_by"], undone["undone_reason"]) == (
        "undone",
        "manual",
        "support ticket 42: a2 is the neighbour's phone",
    )
    assert changes.anonymous_ids == {"a2"}
    assert _person(spark, settings, "anonymous_id", "a2") == pid(settings, "anonymous_id", "a2")  # its own person back

    merge_edges(spark, settings, lake(ev("e5", "a2", 50, ip=IP, ua=UA, props={"device_fingerprint": "f"})))
    assert resolve_identities(spark, settings).anonymous_ids == set()  # more evidence does not re-join them
    assert _person(spark, settings, "anonymous_id", "a2") == pid(settings, "anonymous_id", "a2")


def test_sessions_take_the_login_person_else_the_device_person_else_their_own_id(spark, settings, lake):
    merge_edges(spark, settings, lake(ev("e1", "a1", 0, user="u1"), ev("e2", "a2", 1, user="u1")))
    resolve_identities(spark, settings)
    sessions = spark.createDataFrame(
        [("s1", "a2", None, "old"), ("s2", "a9", "u1", "old"), ("s3", "a9", None, "old"), ("s4", "a1", "u7", "old")],
        "session_id STRING, anonymous_id STRING, user_id STRING, person_id STRING",
    )
    attributed = with_person_id(sessions, table(spark, settings, "silver.identity_map"), hash_key(settings))
    assert attributed.columns == sessions.columns
    assert {r.session_id: r.person_id for r in attributed.collect()} == {
        "s1": pid(settings, "user_id", "u1"),  # the device's person
        "s2": pid(settings, "user_id", "u1"),  # the login's person, on a device resolution has not seen
        "s3": pid(
            settings, "anonymous_id", "a9"
        ),  # unknown device: the id it will have on its own (same hash in Spark)
        "s4": pid(settings, "user_id", "u1"),  # a login resolution has not seen yet: the device's person
    }


def _random_edges(rng, batch: int, known: list[str]) -> list[tuple]:
    """One batch of identity evidence: new devices and known ones seen again, some logging in (now and then a
    login shared across devices, or a device with many logins: a shared device), with fingerprints and IP +
    user agents drawn from small pools so that some link devices and some are on too many of them."""
    rows = []
    for n in range(12):
        device = rng.choice(known) if known and rng.random() < 0.5 else f"d{batch}-{n}"
        start = at(batch * 60 + rng.randrange(50))
        end = start + timedelta(minutes=rng.randrange(1, 40))
        rows.append((device, "anonymous_id", device, start, end, 1))
        if rng.random() < 0.35:
            rows.append((device, "user_id", f"u{rng.randrange(10)}", start, end, 1))
        if rng.random() < 0.15:
            rows.append((device, "email_hash", f"h{rng.randrange(6)}", start, end, 1))
        if rng.random() < 0.4:
            rows.append((device, "fingerprint", f"fp{rng.randrange(5)}", start, end, 1))
        if rng.random() < 0.4:
            rows.append((device, "ip_ua", f"ipua{rng.randrange(4)}", start, end, 1))
    return rows


def _neighbours(spark, settings, devices, cfg) -> set[str]:
    part = neighbourhood(spark, settings, devices, cfg)
    try:
        return {r.anonymous_id for r in part.devices.collect()}
    finally:
        part.release()


def test_resolving_only_the_neighbourhood_of_a_batchs_devices_plans_what_the_whole_graph_does(spark, settings):
    """Over batches of random evidence (merges, undos by evidence and by hand, shared devices, crowded
    fingerprints), the plan made from the neighbourhood of the batch's devices equals the plan made from
    the whole graph, and so does the map each leaves."""
    ensure_tables(spark, settings, IDENTITY_TABLES)
    cfg = replace(load_identity_config(identity_config_file(settings)), fingerprint_max_devices=3, ip_ua_max_devices=3,
                ip_ua_window_seconds=3600)  # fmt: skip
    neighbourhood_only = replace(settings, identity_collect_max_edges=0)  # the graph is small: collected otherwise
    schema = table_contract("silver.identity_edges").schema()
    path = str(settings.table_path("silver.identity_edges"))
    rng, edges, seen = random.Random(20261204), {}, {"merges": 0, "undone": 0, "crowded": 0, "by_hand": 0}
    # first a told story: two devices linked by a fingerprint, which then turns up on two more devices and is
    # too common from then on: the first two's link goes, though the batch holds neither of them
    story = [
        [(d, kind, value, at(n), at(n + 5), 1) for n, d in enumerate(("s1", "s2"))
         for kind, value in (("anonymous_id", d), ("fingerprint", "fp-common"))],
        [(d, kind, value, at(10), at(12), 1) for d in ("s3", "s4")
         for kind, value in (("anonymous_id", d), ("fingerprint", "fp-common"))],
        # then a NAT: n1 and n2 share a fingerprint (n2 joins n1 by it) and, with n3-n5, an IP + user agent on
        # too many devices; a later device behind the NAT must not pull in n1 and n2 (nothing the NAT attached)
        [(d, kind, value, at(20 + n), at(30), 1) for n, d in enumerate(("n1", "n2", "n3", "n4", "n5"))
         for kind, value in (("anonymous_id", d), ("ip_ua", "nat"), *([("fingerprint", "fp-n")] if n < 2 else []))],
        [("n6", kind, value, at(40), at(41), 1) for kind, value in (("anonymous_id", "n6"), ("ip_ua", "nat"))],
    ]  # fmt: skip
    for batch in range(len(story) + 4):
        fresh = story[batch] if batch < len(story) else _random_edges(rng, batch, sorted({key[0] for key in edges}))
        for row in fresh:  # a device seen again: its edges grow (merge_edges replaces a device's rows)
            known = edges.get(row[:3])
            edges[row[:3]] = row if known is None else (*row[:3], min(known[3], row[3]), max(known[4], row[4]),
                                                         known[5] + 1)  # fmt: skip
        spark.createDataFrame(list(edges.values()), schema).write.format("delta").mode("overwrite").save(path)
        touched = spark.createDataFrame(sorted({(r[0],) for r in fresh}), "anonymous_id STRING")

        if batch == 3:
            assert _neighbours(spark, settings, touched, cfg) == {"n6"}
            # a row resolved before the map recorded linked_by (null) is followed by its method, as it was then
            in_map = DeltaTable.forPath(spark, str(settings.table_path("silver.identity_map")))
            n2 = "identifier_type = 'anonymous_id' AND identifier = 'n2'"
            assert [r.linked_by for r in in_map.toDF().where(n2).collect()] == ["fp-n"]
            in_map.update(n2, {"linked_by": "NULL"})
            assert _neighbours(spark, settings, touched, cfg) == {"n1", "n2", "n6"}
            in_map.update(n2, {"linked_by": "'fp-n'"})
        whole = plan_identities(spark, settings, cfg).plan
        pending = plan_identities(spark, neighbourhood_only, cfg, devices=touched)
        assert pending.scope == "neighbourhood"
        if batch == 0:  # under identity_collect_max_edges, devices or not, the graph is collected
            assert plan_identities(spark, settings, cfg, devices=touched).scope == "whole graph"
        part = pending.plan
        assert set(part.upserts) == set(whole.upserts), batch
        assert set(part.deletes) == set(whole.deletes), batch
        assert sorted(part.merges, key=str) == sorted(whole.merges, key=str), batch
        assert part.changed == whole.changed and part.inserted == whole.inserted, batch
        if batch == 1:
            assert {r.identifier for r in whole.upserts} >= {"s2"}, whole.upserts  # s2 is on its own again
        write_identities(spark, settings, pending)

        seen["merges"] += sum(m.status == "active" for m in whole.merges)
        seen["undone"] += sum(m.status == "undone" for m in whole.merges)
        counts: dict[tuple[str, str], int] = {}
        for _, kind, value, *_ in edges.values():
            counts[kind, value] = counts.get((kind, value), 0) + 1
        seen["crowded"] = sum(n > 3 for (kind, _), n in counts.items() if kind in ("fingerprint", "ip_ua"))
        active = [m for m in read_merges(spark, settings) if m.status == "active"]
        if batch >= 4 and active and not seen["by_hand"]:  # an operator undoes one: a do-not-link rule from then on
            undo_merge(spark, settings, active[0].merge_id, "test: not the same person", cfg)
            seen["by_hand"] = 1
    assert all(seen.values()), seen  # the story had merges, undos by evidence and by hand, crowded evidence
