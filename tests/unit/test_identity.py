"""Identity resolution on small evidence graphs: who is one person, how sure, and what a change records."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from spark_jobs.config import InvalidConfigError
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver import identity
from spark_jobs.silver.identity import (
    Edge,
    Ident,
    PersonIdsChanged,
    Resolution,
    check_person_ids,
    load_identity_config,
    plan_changes,
)

pytestmark = pytest.mark.unit

CONFIG = REPO_ROOT / "config" / "identity.yaml"
CFG = load_identity_config(CONFIG)
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
KEY = b"unit-test-hash-key-0123456789abcdef"


def resolve(edges, cfg, cannot_link=()) -> Resolution:
    return identity.resolve(edges, cfg, cannot_link, key=KEY)


def person_id_of(ident: Ident) -> str:
    return identity.person_id_of(ident, KEY)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def edge(anon: str, kind: str, value: str, start: float = 0, end: float | None = None) -> Edge:
    """An identity edge: device `anon` seen with `kind` `value` from `start` to `end` minutes after T0."""
    return Edge(anon, kind, value, at(start), at(start if end is None else end))


def login(anon: str, user: str, start: float = 0, end: float | None = None) -> Edge:
    return edge(anon, "user_id", user, start, end)


def groups(resolution: Resolution) -> set[frozenset[str]]:
    """The persons as sets of 'type:value' identifiers."""
    by_person: dict[str, set[str]] = {}
    for ident, row in resolution.rows.items():
        by_person.setdefault(row.person_id, set()).add(str(ident))
    return {frozenset(members) for members in by_person.values()}


def person(resolution: Resolution, text: str) -> str:
    return resolution.rows[Ident.parse(text)].person_id


def how(resolution: Resolution) -> dict[str, tuple[str, float]]:
    return {str(i): (r.method, r.confidence) for i, r in resolution.rows.items()}


def test_two_devices_that_log_in_as_the_same_user_are_one_person():
    res = resolve([login("a1", "u1"), login("a2", "u1", 60), edge("a3", "ip_ua", "k9")], CFG)
    assert groups(res) == {
        frozenset({"anonymous_id:a1", "anonymous_id:a2", "user_id:u1"}),
        frozenset({"anonymous_id:a3"}),
    }
    assert person(res, "anonymous_id:a2") == person_id_of(Ident("user_id", "u1"))
    assert person(res, "anonymous_id:a3") == person_id_of(Ident("anonymous_id", "a3"))  # what it has on its own


def test_an_email_hash_joins_two_accounts_and_a_device_that_never_logged_in():
    # Decision: an email hash is deterministic evidence, so two accounts that share one are one person.
    res = resolve(
        [
            login("a1", "u1"),
            edge("a1", "email_hash", "e1"),
            login("a2", "u2", 10),
            edge("a2", "email_hash", "e1", 10),
            edge("a3", "email_hash", "e1", 20),
        ],
        CFG,
    )
    assert len(groups(res)) == 1
    assert person(res, "user_id:u2") == person_id_of(Ident("user_id", "u1"))  # u1 was seen first: the anchor
    assert how(res)["user_id:u2"] == ("email_hash", 0.99)
    assert how(res)["anonymous_id:a3"] == ("email_hash", 0.99)


def test_a_device_with_three_logins_is_shared_and_merges_none_of_them():
    res = resolve(
        [
            *(login("kiosk", u) for u in ("u1", "u2", "u3")),
            login("a1", "u1"),
            *(login("family", u) for u in ("u4", "u5")),  # two logins: below the threshold, one person
        ],
        CFG,
    )
    assert groups(res) == {
        frozenset({"anonymous_id:kiosk"}),
        frozenset({"anonymous_id:a1", "user_id:u1"}),
        frozenset({"user_id:u2"}),
        frozenset({"user_id:u3"}),
        frozenset({"anonymous_id:family", "user_id:u4", "user_id:u5"}),
    }
    assert how(res)["anonymous_id:kiosk"] == ("shared_device", 1.0)
    kiosk_links = [k for k in res.links if k.a == Ident("anonymous_id", "kiosk")]
    assert {(k.method, k.status) for k in kiosk_links} == {("shared_device", "shared_device")}
    assert "shared device: 3 distinct user_ids" in res.notes[Ident("anonymous_id", "kiosk")]


def test_a_rerun_on_shuffled_input_gives_the_same_ids_methods_and_confidences():
    edges = [
        login("a1", "u7", 5), login("a2", "u7", 50), login("a3", "u3", 90), edge("a3", "email_hash", "e1", 90),
        edge("a4", "email_hash", "e1", 100), edge("a4", "fingerprint", "f1", 100), edge("a5", "fingerprint", "f1", 3),
        edge("a6", "ip_ua", "k1", 0, 10), edge("a1", "ip_ua", "k1", 20, 30), edge("a7", "ip_ua", "k1", 25, 26),
        login("kiosk", "u1"), login("kiosk", "u2"), login("kiosk", "u3"), edge("a8", "ip_ua", "k2", 0),
    ]  # fmt: skip
    first = resolve(edges, CFG).rows
    for seed in range(5):
        shuffled = edges[:]
        random.Random(seed).shuffle(shuffled)
        assert resolve(shuffled, CFG).rows == first
    assert len({row.person_id for row in first.values()}) == 6


def test_ip_ua_joins_devices_only_when_their_activity_is_within_the_window():
    res = resolve(
        [
            login("a1", "u1", 0, 20),
            edge("a1", "ip_ua", "k", 0, 20),
            edge("a2", "ip_ua", "k", 50, 55),  # 30 minutes after a1: within the window
            edge("a3", "ip_ua", "k", 120, 130),  # 65 minutes after a2: too far apart
        ],
        CFG,
    )
    assert person(res, "anonymous_id:a2") == person(res, "user_id:u1")
    assert how(res)["anonymous_id:a2"] == ("ip_ua", 0.6)
    assert person(res, "anonymous_id:a3") == person_id_of(Ident("anonymous_id", "a3"))


def test_probabilistic_evidence_never_joins_two_logged_in_persons():
    res = resolve(
        [
            login("a1", "u1"),
            login("a2", "u2"),
            edge("a1", "fingerprint", "f"),
            edge("a2", "fingerprint", "f"),
            edge("a3", "fingerprint", "f"),
        ],
        CFG,
    )
    assert person(res, "user_id:u1") != person(res, "user_id:u2")
    refused = [k for k in res.links if k.status == "contradiction"]
    assert {(str(k.a), str(k.b)) for k in refused} == {
        ("anonymous_id:a1", "anonymous_id:a2"),
        ("anonymous_id:a2", "anonymous_id:a3"),  # a3 already joined u1's person through a1
    }
    assert person(res, "anonymous_id:a3") == person(res, "user_id:u1")


def test_a_fingerprint_on_too_many_devices_links_nobody():
    devices = [f"a{i}" for i in range(CFG.fingerprint_max_devices + 1)]
    res = resolve([edge(d, "fingerprint", "iphone-default") for d in devices], CFG)
    assert len(groups(res)) == len(devices)
    assert any("on 6 devices (more than 5): ignored" in n for n in res.notes[Ident("anonymous_id", "a0")])


def test_each_row_carries_the_method_and_confidence_of_the_weakest_link_to_its_anchor():
    res = resolve(
        [
            login("a1", "u1"),
            edge("a1", "email_hash", "e1"),
            edge("a1", "fingerprint", "f1"),
            edge("a2", "fingerprint", "f1", 5),
            edge("a1", "ip_ua", "k1", 0, 10),
            edge("a2", "ip_ua", "k1", 5, 10),  # a second, weaker path a1-a2: the best one counts
            edge("a2", "ip_ua", "k2", 5, 10),
            edge("a3", "ip_ua", "k2", 15, 20),
            edge("a9", "ip_ua", "k9", 0),
        ],
        CFG,
    )
    assert how(res) == {
        "user_id:u1": ("self", 1.0),
        "anonymous_id:a1": ("login", 1.0),
        "email_hash:e1": ("email_hash", 0.99),
        "anonymous_id:a2": ("fingerprint", 0.8),
        "anonymous_id:a3": ("ip_ua", 0.6),  # a3 -ip_ua- a2 -fingerprint- a1 -login- u1
        "anonymous_id:a9": ("self", 1.0),
    }
    assert res.describe_path(Ident("anonymous_id", "a3")) == (
        "anonymous_id:a3 -[ip_ua 0.6]- anonymous_id:a2 -[fingerprint 0.8]- anonymous_id:a1 -[login 1]- user_id:u1"
    )
    row = res.rows[Ident("anonymous_id", "a2")]
    assert (row.first_seen, row.last_seen) == (at(5), at(10))
    # the value of each device's own step towards the anchor when a fingerprint or ip_ua made it (a3's path is
    # fingerprint further up, but its own step is k2): what a batch follows a too-common value to
    assert {str(i): r.linked_by for i, r in res.rows.items()} == {
        "user_id:u1": "", "anonymous_id:a1": "", "email_hash:e1": "",
        "anonymous_id:a2": "f1", "anonymous_id:a3": "k2", "anonymous_id:a9": "",
    }  # fmt: skip


def test_the_anchor_is_the_earliest_login_else_the_earliest_email_else_the_earliest_device():
    with_logins = resolve([login("a1", "u9", 0), login("a1", "u1", 30)], CFG)
    assert person(with_logins, "anonymous_id:a1") == person_id_of(Ident("user_id", "u9"))  # seen first, not smallest
    emails_only = resolve([edge("a1", "email_hash", "e2", 0), edge("a0", "email_hash", "e2", 5)], CFG)
    assert person(emails_only, "anonymous_id:a0") == person_id_of(Ident("email_hash", "e2"))
    devices_only = resolve([edge("b", "fingerprint", "f", 0), edge("a", "fingerprint", "f", 5)], CFG)
    assert person(devices_only, "anonymous_id:a") == person_id_of(Ident("anonymous_id", "b"))


# Merges and undos: a device's story in three resolutions.
BEFORE = [login("a1", "u1", 0, 20), edge("a1", "ip_ua", "k", 0, 20), edge("a2", "ip_ua", "other", 200, 210)]
SAME_NETWORK = [*BEFORE, edge("a2", "ip_ua", "k", 25, 40)]  # a2 shows up behind a1's IP + user agent
LOGS_IN_AS_U2 = [*SAME_NETWORK, login("a2", "u2", 300)]


def test_an_ip_ua_merge_is_recorded_then_undone_when_the_device_logs_in_as_someone_else():
    first = resolve(BEFORE, CFG)
    second = resolve(SAME_NETWORK, CFG)
    merged = plan_changes(first.rows, second)
    (merge,) = merged.merges
    assert (merge.kept_person_id, merge.retired_person_id) == (
        person_id_of(Ident("user_id", "u1")),
        person_id_of(Ident("anonymous_id", "a2")),
    )
    assert (merge.method, merge.confidence, merge.status, merge.merged_at) == ("ip_ua", 0.6, "active", at(25))
    assert merge.evidence["path"] == "anonymous_id:a2 -[ip_ua 0.6]- anonymous_id:a1 -[login 1]- user_id:u1"
    assert merge.evidence["kept_anchor"] == "user_id:u1" and merge.evidence["retired_anchor"] == "anonymous_id:a2"
    assert merge.retired_identifiers == ("anonymous_id:a2",)
    assert merge.kept_identifiers == ("anonymous_id:a1", "user_id:u1")
    assert merged.changed == {Ident("anonymous_id", "a2")}

    third = resolve(LOGS_IN_AS_U2, CFG)
    undone = plan_changes(second.rows, third, merged.merges)
    (record,) = undone.merges
    assert (record.merge_id, record.status, record.undone_by, record.undone_at) == (
        merge.merge_id,
        "undone",
        "evidence",
        at(300),
    )
    assert "now belongs to " + person_id_of(Ident("user_id", "u2")) in record.undone_reason
    assert "both sides have a different login" in record.undone_reason
    assert record.undone_evidence["now_path"] == "anonymous_id:a2 -[login 1]- user_id:u2"
    assert undone.changed == {Ident("anonymous_id", "a2")}  # u2 is new and has its own id: not a change


def test_a_device_that_becomes_shared_undoes_the_merge_of_its_logins():
    apart = resolve([login("a1", "u1", 0), login("a2", "u2", 10)], CFG)
    together = resolve([login("a1", "u1", 0), login("a2", "u2", 10), login("d", "u1", 20), login("d", "u2", 30)], CFG)
    (merge,) = plan_changes(apart.rows, together).merges
    assert (merge.method, merge.confidence) == ("login", 1.0)
    shared = resolve(
        [login("a1", "u1", 0), login("a2", "u2", 10), login("d", "u1", 20), login("d", "u2", 30), login("d", "u3", 40)],
        CFG,
    )
    plan = plan_changes(together.rows, shared, [merge])
    (record,) = plan.merges
    assert record.status == "undone" and "shared device: 3 distinct user_ids" in record.undone_reason
    assert record.undone_at == at(40)  # the third login made the device shared
    assert person(shared, "user_id:u2") == person_id_of(Ident("user_id", "u2"))  # its own person back
    assert plan.changed == {Ident("user_id", "u2"), Ident("anonymous_id", "a2"), Ident("anonymous_id", "d")}


def test_a_manual_undo_is_a_do_not_link_rule_for_later_evidence():
    merge = plan_changes(resolve(BEFORE, CFG).rows, resolve(SAME_NETWORK, CFG)).merges[0]
    by_hand = replace(merge, status="undone", undone_by="manual", undone_reason="different people")
    more_evidence = [*SAME_NETWORK, edge("a2", "fingerprint", "f"), edge("a1", "fingerprint", "f")]
    res = resolve(more_evidence, CFG, [by_hand.cannot_link()])
    assert person(res, "anonymous_id:a2") == person_id_of(Ident("anonymous_id", "a2"))
    assert {k.method for k in res.links if k.status == "cannot_link"} == {"fingerprint", "ip_ua"}
    plan = plan_changes(resolve(SAME_NETWORK, CFG).rows, res, [by_hand])
    assert plan.merges == ()  # the undone merge stays as the operator left it
    assert plan.changed == {Ident("anonymous_id", "a2")}


def test_a_device_seen_alone_has_its_own_person_and_logging_in_later_is_a_recorded_merge():
    alone = resolve([edge("a1", "anonymous_id", "a1", 0, 5)], CFG)
    assert how(alone) == {"anonymous_id:a1": ("self", 1.0)}
    assert person(alone, "anonymous_id:a1") == person_id_of(Ident("anonymous_id", "a1"))
    later = resolve([edge("a1", "anonymous_id", "a1", 0, 50), login("a1", "u1", 50)], CFG)
    plan = plan_changes(alone.rows, later)
    assert [(m.kept_person_id, m.retired_person_id, m.status) for m in plan.merges] == [
        (person_id_of(Ident("user_id", "u1")), person_id_of(Ident("anonymous_id", "a1")), "active")
    ]
    assert plan.changed == {Ident("anonymous_id", "a1")}


def test_a_resolution_that_changes_nothing_plans_nothing():
    res = resolve(LOGS_IN_AS_U2, CFG)
    assert plan_changes(res.rows, resolve(LOGS_IN_AS_U2[::-1], CFG)).is_empty


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "identity.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def _config_with(section: str, key: str, value) -> dict:
    doc = yaml.safe_load(CONFIG.read_text())
    if value is None:
        doc[section].pop(key)
    else:
        doc[section][key] = value
    return doc


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("ip_ua", "confidence", 1.5, "ip_ua.confidence: needs a confidence above 0 and at most 1, got 1.5"),
        ("ip_ua", "confidence", 0.995, "ip_ua.confidence: a probabilistic link must be less confident"),
        ("fingerprint", "confidence", None, "fingerprint.confidence: needs a number, got None"),
        ("shared_device", "min_users", 2.5, "shared_device.min_users: needs a whole number of at least 2"),
        ("shared_device", "min_users", 1, "shared_device.min_users: needs a whole number of at least 2, got 1"),
        ("ip_ua", "window_seconds", -60, "ip_ua.window_seconds: needs a positive number, got -60"),
        ("ip_ua", "window_seconds", "30 minutes", "ip_ua.window_seconds: needs a number, got '30 minutes'"),
        ("ip_ua", "window", 1800, "ip_ua.window: unknown key; ip_ua takes"),
        ("email_hash", "confidence", 1.2, "email_hash.confidence: needs a confidence above 0 and at most 1"),
    ],
)
def test_a_bad_threshold_is_named_by_file_and_key(tmp_path, section, key, value, message):
    path = _write(tmp_path, _config_with(section, key, value))
    with pytest.raises(InvalidConfigError) as error:
        load_identity_config(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_an_unknown_section_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(InvalidConfigError, match=r"identity\.yaml: cookie: unknown section"):
        load_identity_config(_write(tmp_path, {**yaml.safe_load(CONFIG.read_text()), "cookie": {"confidence": 1}}))
    with pytest.raises(InvalidConfigError, match=r"nope\.yaml: file: does not exist"):
        load_identity_config(tmp_path / "nope.yaml")


def test_person_ids_are_keyed_and_a_map_made_under_another_key_is_refused():
    import hashlib
    from types import SimpleNamespace

    u1 = Ident("user_id", "u1")
    assert identity.person_id_of(u1, KEY) != identity.person_id_of(u1, b"another-key-0123456789abcdef-xyz")
    assert identity.person_id_of(u1, KEY) != "p-" + hashlib.sha256(b"user_id:u1").hexdigest()[:24]  # not bare
    res = resolve([login("a1", "u1"), login("a2", "u2", 5)], CFG)
    settings = SimpleNamespace(lakehouse=Path("/lake"))
    check_person_ids(res.rows, KEY, settings)  # the key it was made with: fine
    with pytest.raises(PersonIdsChanged, match="INTENTLAKE_HASH_KEY back") as refused:
        check_person_ids(res.rows, b"another-key-0123456789abcdef-xyz", settings)
    assert "u1" not in str(refused.value) and "u2" not in str(refused.value)  # names no login
