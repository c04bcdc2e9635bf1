"""Identity resolution: devices (anonymous_id), logins (user_id) and email hashes -> a stable person_id.

Three steps, each with its table:

1. Evidence (silver.identity_edges). `edges_of` turns bronze events into one row per (device, identifier):
   the device itself (so every device that sent an event has a map row and its own person until linked),
   the login, a keyed email hash (never the raw email, nor its bare sha256), a device fingerprint and a keyed hash
   of IP + user agent, each with first_seen, last_seen and an event count. `merge_edges` recomputes the
   edges of every device in a micro-batch from all of that device's bronze events and replaces its rows, so
   a replayed, re-run or split batch leaves the table exactly as it was (counts are never added twice).
2. Resolution (silver.identity_map). `resolve` is pure Python over the edges: union-find over devices,
   logins and email hashes. Deterministic links first (device-login, device-email), then probabilistic
   ones (shared fingerprint; same IP + user agent with activity within a window), strongest first. A
   probabilistic link never joins two persons that each have a login; a shared device (many logins) links
   nobody; a manual undo is a do-not-link rule. Every row carries the method and confidence of the weakest
   link on its way to the person's anchor (links are taken strongest first, so that is the best path), and
   a device the value of the fingerprint or IP + user agent that attached it (linked_by).
3. Merges (silver.identity_merges). `plan_changes` compares the previous map with the new resolution: a
   person id that disappears because its identifiers joined another person is a merge; an active merge
   whose sides the new resolution no longer joins is undone by evidence. `undo_merge` undoes one by hand.

Person ids are `p-` + 24 hex of HMAC-SHA256('<type>:<identifier>') under the hash key (`privacy.hash_key`)
of the person's anchor, so nobody holding a login can compute its person id without the key: the earliest-seen
user_id, else the earliest-seen email hash, else the earliest-seen device (ties: the smallest value). So a
re-run from scratch on the same input gives the same ids whatever the input order, and a device nobody has
linked has the id `person_id_of(Ident('anonymous_id', id), key)` even before it reaches the map. When two
persons merge, the merged person keeps the id of the winning anchor; the other id is retired and the merge
recorded. Preferring the earliest-seen identifier (not the smallest) means an existing person keeps its id
when a newer account or device joins it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from itertools import combinations
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, StructField, StructType

from spark_jobs.config import InvalidConfigError
from spark_jobs.contracts import ensure_tables, read_table, table_contract
from spark_jobs.merge import MergeCounts, replace_scopes
from spark_jobs.privacy import hash_key, keyed_hash, keyed_hash_column
from spark_jobs.settings import Settings

IDENTITY_TABLES = ("silver.identity_edges", "silver.identity_map", "silver.identity_merges")
EVIDENCE_TYPES = ("anonymous_id", "user_id", "email_hash", "fingerprint", "ip_ua")  # identity_edges.identifier_type
IDENTIFIER_TYPES = ("anonymous_id", "user_id", "email_hash")  # identity_map.identifier_type
METHODS = ("login", "email_hash", "fingerprint", "ip_ua", "shared_device", "self")
EDGE_KEYS = ("anonymous_id", "identifier_type", "identifier")
MAP_KEYS = ("identifier_type", "identifier")
_ANCHOR_RANK = {"user_id": 0, "email_hash": 1, "anonymous_id": 2}
_CROWDABLE = ("fingerprint", "ip_ua")  # probabilistic evidence, ignored on more devices than its limit
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class IdentityConfig:
    """The thresholds of config/identity.yaml."""

    login_confidence: float
    email_confidence: float
    shared_device_min_users: int
    fingerprint_confidence: float
    fingerprint_max_devices: int
    ip_ua_confidence: float
    ip_ua_window_seconds: float
    ip_ua_max_devices: int


_CONFIG_KEYS = {  # field -> (section, key) in config/identity.yaml
    "login_confidence": ("login", "confidence"),
    "email_confidence": ("email_hash", "confidence"),
    "shared_device_min_users": ("shared_device", "min_users"),
    "fingerprint_confidence": ("fingerprint", "confidence"),
    "fingerprint_max_devices": ("fingerprint", "max_devices"),
    "ip_ua_confidence": ("ip_ua", "confidence"),
    "ip_ua_window_seconds": ("ip_ua", "window_seconds"),
    "ip_ua_max_devices": ("ip_ua", "max_devices"),
}


def identity_config_file(settings: Settings) -> Path:
    """Where the identity thresholds live: config/identity.yaml under the settings' config dir."""
    return settings.config_dir / "identity.yaml"


def load_identity_config(path: Path) -> IdentityConfig:
    """config/identity.yaml -> IdentityConfig; every problem names the file and the section.key."""
    if not path.exists():
        raise InvalidConfigError(path, "file", "does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InvalidConfigError(path, "file", f"not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise InvalidConfigError(path, "file", f"expected a mapping with sections {_sections()}")
    unknown = sorted(set(raw) - set(_sections()))
    if unknown:
        raise InvalidConfigError(path, ", ".join(map(str, unknown)), f"unknown section; known: {_sections()}")
    for section, body in raw.items():
        if not isinstance(body, dict):
            raise InvalidConfigError(path, section, f"must be a mapping of keys to values, got {body!r}")
        allowed = [key for sec, key in _CONFIG_KEYS.values() if sec == section]
        extra = sorted(set(body) - set(allowed))
        if extra:
            raise InvalidConfigError(path, f"{section}.{extra[0]}", f"unknown key; {section} takes {allowed}")
    values: dict[str, Any] = {}
    for f in fields(IdentityConfig):
        section, key = _CONFIG_KEYS[f.name]
        where = f"{section}.{key}"
        value = (raw.get(section) or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidConfigError(path, where, f"needs a number, got {value!r}")
        if key == "confidence" and not 0 < value <= 1:
            raise InvalidConfigError(path, where, f"needs a confidence above 0 and at most 1, got {value!r}")
        if f.type == "int" and (not float(value).is_integer() or value < 2):
            raise InvalidConfigError(path, where, f"needs a whole number of at least 2, got {value!r}")
        if value <= 0:
            raise InvalidConfigError(path, where, f"needs a positive number, got {value!r}")
        values[f.name] = int(value) if f.type == "int" else float(value)
    cfg = IdentityConfig(**values)
    if cfg.email_confidence > cfg.login_confidence:
        raise InvalidConfigError(path, "email_hash.confidence", "must not exceed login.confidence")
    for method in ("fingerprint", "ip_ua"):  # deterministic evidence wins; its confidence must say so too
        if getattr(cfg, f"{method}_confidence") >= cfg.email_confidence:
            raise InvalidConfigError(path, f"{method}.confidence", "a probabilistic link must be less confident "
                                     f"than email_hash.confidence ({cfg.email_confidence:g})")  # fmt: skip
    return cfg


def _sections() -> list[str]:
    return list(dict.fromkeys(section for section, _ in _CONFIG_KEYS.values()))


# ---------------------------------------------------------------------------------------------- model


class Ident(NamedTuple):
    """One identifier of a person: kind is anonymous_id, user_id or email_hash."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Ident:
        kind, _, value = text.partition(":")
        return cls(kind, value)


def person_id_of(anchor: Ident, key: bytes) -> str:
    """The person id a person anchored at this identifier has: p- + 24 hex of HMAC-SHA256('<type>:<value>')
    under the hash key."""
    return "p-" + keyed_hash(str(anchor), key)[:24]


def merge_id_of(kept_person_id: str, retired_person_id: str) -> str:
    return "m-" + hashlib.sha256(f"{kept_person_id}|{retired_person_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Edge:
    """One silver.identity_edges row: a device seen with an identifier."""

    anonymous_id: str
    identifier_type: str
    identifier: str
    first_seen: datetime
    last_seen: datetime
    events: int = 1


@dataclass(frozen=True)
class Link:
    """Evidence that two identifiers are one person, and what resolution did with it.

    status: linked (joined two components), redundant (already joined), contradiction (probabilistic,
    both sides have a login), cannot_link (a manual undo forbids it), shared_device (a shared device's
    evidence, never joined).
    """

    a: Ident
    b: Ident
    method: str
    confidence: float
    at: datetime  # event time from which the evidence held
    key: str = ""  # the fingerprint or ip_ua hash two devices share
    status: str = "linked"

    def describe(self) -> str:
        return f"{self.a} -[{self.method} {self.confidence:g}]- {self.b}"


@dataclass(frozen=True)
class CannotLink:
    """A do-not-link rule from a manual undo: no identifier of one side may join one of the other."""

    left: frozenset[Ident]
    right: frozenset[Ident]


@dataclass(frozen=True)
class IdentityRow:
    """One silver.identity_map row."""

    identifier_type: str
    identifier: str
    person_id: str
    method: str
    confidence: float
    first_seen: datetime
    last_seen: datetime
    linked_by: str | None = ""  # the fingerprint / ip_ua value of the link towards the anchor ("" otherwise)

    @property
    def ident(self) -> Ident:
        return Ident(self.identifier_type, self.identifier)


@dataclass(frozen=True)
class Resolution:
    """What `resolve` found: a row per identifier, every link with its status, and why (notes)."""

    rows: dict[Ident, IdentityRow]
    links: tuple[Link, ...]
    anchors: dict[str, Ident]  # person_id -> anchor
    parents: dict[Ident, tuple[Ident, Link]]  # the next step from an identifier towards its anchor
    notes: dict[Ident, tuple[str, ...]] = field(default_factory=dict)
    shared_since: dict[Ident, datetime] = field(default_factory=dict)  # shared device -> event time it became so
    key: bytes = field(default=b"", repr=False)  # the hash key the person ids were made with

    def person(self, ident: Ident) -> str | None:
        row = self.rows.get(ident)
        return row.person_id if row else None

    def path(self, ident: Ident) -> tuple[Link, ...]:
        """The links from an identifier to its person's anchor (empty for the anchor itself)."""
        steps = []
        while ident in self.parents:
            ident, link = self.parents[ident]
            steps.append(link)
        return tuple(steps)

    def describe_path(self, ident: Ident) -> str:
        steps, node = [str(ident)], ident
        while node in self.parents:
            node, link = self.parents[node]
            steps.append(f"-[{link.method} {link.confidence:g}]- {node}")
        return " ".join(steps)


@dataclass(frozen=True)
class MergeRecord:
    """One silver.identity_merges row (fields in contract order)."""

    merge_id: str
    kept_person_id: str
    retired_person_id: str
    method: str
    confidence: float
    evidence: dict[str, str]
    kept_identifiers: tuple[str, ...]
    retired_identifiers: tuple[str, ...]
    merged_at: datetime
    status: str = "active"
    undone_by: str | None = None
    undone_reason: str | None = None
    undone_evidence: dict[str, str] | None = None
    undone_at: datetime | None = None

    def cannot_link(self) -> CannotLink:
        return CannotLink(
            frozenset(map(Ident.parse, self.kept_identifiers)), frozenset(map(Ident.parse, self.retired_identifiers))
        )


# ---------------------------------------------------------------------------------------------- resolve


class _Components:
    """Union-find that refuses joins a do-not-link rule or a login contradiction forbids."""

    def __init__(self, nodes: Iterable[Ident], cannot_link: Sequence[CannotLink]) -> None:
        self.parent = {n: n for n in nodes}
        self.size = dict.fromkeys(self.parent, 1)
        self.has_login = {n: n.kind == "user_id" for n in self.parent}
        self.sides: dict[Ident, set[tuple[int, int]]] = {n: set() for n in self.parent}
        for i, rule in enumerate(cannot_link):
            for side, members in enumerate((rule.left, rule.right)):
                for member in members & self.parent.keys():
                    self.sides[member].add((i, side))

    def find(self, node: Ident) -> Ident:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def join(self, link: Link, probabilistic: bool) -> str:
        ra, rb = self.find(link.a), self.find(link.b)
        if ra == rb:
            return "redundant"
        if any((rule, 1 - side) in self.sides[rb] for rule, side in self.sides[ra]):
            return "cannot_link"
        if probabilistic and self.has_login[ra] and self.has_login[rb]:
            return "contradiction"
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        self.has_login[ra] = self.has_login[ra] or self.has_login[rb]
        self.sides[ra] |= self.sides[rb]
        return "linked"


def _combine(edges: Iterable[Edge]) -> list[Edge]:
    """Edges with one row per key (duplicates folded: earliest first_seen, latest last_seen, summed events)."""
    by_key: dict[tuple[str, str, str], Edge] = {}
    for e in edges:
        key = (e.anonymous_id, e.identifier_type, e.identifier)
        seen = by_key.get(key)
        if seen is not None:
            e = replace(
                e,
                first_seen=min(e.first_seen, seen.first_seen),
                last_seen=max(e.last_seen, seen.last_seen),
                events=e.events + seen.events,
            )
        by_key[key] = e
    return [by_key[k] for k in sorted(by_key)]


def _gap_seconds(a: Edge, b: Edge) -> float:
    """Event-time distance between two activity intervals (0 when they overlap)."""
    return max(0.0, (max(a.first_seen, b.first_seen) - min(a.last_seen, b.last_seen)).total_seconds())


def _probabilistic_links(
    edges: list[Edge],
    cfg: IdentityConfig,
    shared: set[Ident],
    notes: dict[Ident, list[str]],
    crowded: Mapping[tuple[str, str], int],
) -> list[Link]:
    by_key: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for e in edges:
        if e.identifier_type in ("fingerprint", "ip_ua"):
            by_key[(e.identifier_type, e.identifier)].append(e)
    links = []
    for (method, key), group in sorted(by_key.items()):
        confidence = cfg.fingerprint_confidence if method == "fingerprint" else cfg.ip_ua_confidence
        limit = cfg.fingerprint_max_devices if method == "fingerprint" else cfg.ip_ua_max_devices
        devices = crowded.get((method, key), len(group))  # one row per device per key: len(group) counts devices
        if devices > limit:
            for e in group:
                notes[Ident("anonymous_id", e.anonymous_id)].append(
                    f"{method} {key[:12]} is on {devices} devices (more than {limit}): ignored"
                )
            continue
        for x, y in combinations(group, 2):
            a, b = Ident("anonymous_id", x.anonymous_id), Ident("anonymous_id", y.anonymous_id)
            if method == "ip_ua" and _gap_seconds(x, y) > cfg.ip_ua_window_seconds:
                continue
            status = "shared_device" if a in shared or b in shared else "linked"
            links.append(Link(a, b, method, confidence, max(x.first_seen, y.first_seen), key, status))
    return sorted(links, key=lambda k: (-k.confidence, k.method, k.a, k.b, k.key))


def resolve(
    edges: Iterable[Edge],
    cfg: IdentityConfig,
    cannot_link: Sequence[CannotLink] = (),
    *,
    key: bytes,
    crowded: Mapping[tuple[str, str], int] | None = None,
) -> Resolution:
    """Group devices, logins and email hashes into persons; a row per identifier with method and confidence.

    Pure and order-independent: the same edges in any order give the same person ids, methods and
    confidences. Deterministic links (login, email_hash) are taken first, then probabilistic ones strongest
    first; a probabilistic link that would join two persons that each have a login is refused (the
    logins win), and so is any link a do-not-link rule forbids. A device seen with at least
    `shared_device_min_users` distinct logins (or email hashes) is a shared device: a person of its own,
    its evidence recorded with method shared_device and never joined.

    `crowded`: device counts of fingerprints and IP + user agents on more devices than their limit, when
    `edges` hold only part of their devices (a part of the graph, `plan_identities` with `devices`).
    """
    combined = _combine(edges)
    seen: dict[Ident, tuple[datetime, datetime]] = {}
    logins: dict[tuple[Ident, str], list[datetime]] = defaultdict(list)  # (device, user_id|email_hash) -> firsts
    for e in combined:
        device = Ident("anonymous_id", e.anonymous_id)
        if e.identifier_type in ("user_id", "email_hash"):
            logins[(device, e.identifier_type)].append(e.first_seen)  # one edge per distinct identifier
        nodes = [device] + ([Ident(e.identifier_type, e.identifier)] if e.identifier_type in _ANCHOR_RANK else [])
        for node in nodes:
            first, last = seen.get(node, (e.first_seen, e.last_seen))
            seen[node] = (min(first, e.first_seen), max(last, e.last_seen))
    notes: dict[Ident, list[str]] = defaultdict(list)
    shared_since: dict[Ident, datetime] = {}
    for (device, kind), firsts in sorted(logins.items()):
        if len(firsts) >= cfg.shared_device_min_users:
            notes[device].append(f"shared device: {len(firsts)} distinct {kind}s")
            since = sorted(firsts)[cfg.shared_device_min_users - 1]  # the login that made it shared
            shared_since[device] = min(since, shared_since.get(device, since))
    shared = set(shared_since)
    deterministic = []
    for e in combined:
        if e.identifier_type not in ("user_id", "email_hash"):
            continue
        device = Ident("anonymous_id", e.anonymous_id)
        method, confidence = (
            ("login", cfg.login_confidence) if e.identifier_type == "user_id" else ("email_hash", cfg.email_confidence)
        )
        if device in shared:
            method = "shared_device"
        status = "shared_device" if device in shared else "linked"
        deterministic.append(
            Link(device, Ident(e.identifier_type, e.identifier), method, confidence, e.first_seen, "", status)
        )
    deterministic.sort(key=lambda k: (-k.confidence, k.a, k.b))
    components = _Components(sorted(seen), cannot_link)
    links = []
    for link in [*deterministic, *_probabilistic_links(combined, cfg, shared, notes, crowded or {})]:
        if link.status == "linked":
            link = replace(link, status=components.join(link, probabilistic=link.method in ("fingerprint", "ip_ua")))
        links.append(link)
    members: dict[Ident, list[Ident]] = defaultdict(list)
    for node in sorted(seen):
        members[components.find(node)].append(node)
    tree: dict[Ident, list[tuple[Ident, Link]]] = defaultdict(list)
    for link in links:
        if link.status == "linked":
            tree[link.a].append((link.b, link))
            tree[link.b].append((link.a, link))
    rows: dict[Ident, IdentityRow] = {}
    anchors: dict[str, Ident] = {}
    parents: dict[Ident, tuple[Ident, Link]] = {}
    for group in members.values():
        anchor = min(group, key=lambda n: (_ANCHOR_RANK[n.kind], seen[n][0], n.value))
        person_id = person_id_of(anchor, key)
        anchors[person_id] = anchor
        weakest: dict[Ident, Link | None] = {anchor: None}
        queue = [anchor]
        for node in queue:  # breadth-first over the spanning forest: each node has exactly one path
            for other, link in tree[node]:
                if other in weakest:
                    continue
                parents[other] = (node, link)
                above = weakest[node]
                weakest[other] = link if above is None or link.confidence <= above.confidence else above
                queue.append(other)
        for node in group:
            link_on_path = weakest[node]
            if link_on_path is not None:
                method, confidence = link_on_path.method, link_on_path.confidence
            else:
                method, confidence = ("shared_device" if node in shared else "self"), 1.0
            first, last = seen[node]
            step = parents[node][1] if node in parents else None
            linked_by = step.key if step is not None and step.method in _CROWDABLE else ""
            rows[node] = IdentityRow(
                node.kind, node.value, person_id, method, round(confidence, 6), first, last, linked_by
            )
    notes_by = {k: tuple(v) for k, v in notes.items()}
    return Resolution(rows, tuple(links), anchors, parents, notes_by, shared_since, key)


# ---------------------------------------------------------------------------------------------- changes


@dataclass(frozen=True)
class IdentityPlan:
    """What to write after a resolution: map rows to upsert and delete, merge rows to upsert, who moved."""

    upserts: tuple[IdentityRow, ...]
    deletes: tuple[IdentityRow, ...]
    merges: tuple[MergeRecord, ...]
    changed: frozenset[Ident]
    inserted: int = 0

    @property
    def is_empty(self) -> bool:
        return not (self.upserts or self.deletes or self.merges)


def _person_or_own(rows: Mapping[Ident, IdentityRow], ident: Ident, key: bytes) -> str:
    """The person an identifier maps to, or the id it has on its own when the map does not know it."""
    row = rows.get(ident)
    return row.person_id if row else person_id_of(ident, key)


def _merge_record(kept: str, retired: str, moved: list[Ident], members: list[Ident], new: Resolution) -> MergeRecord:
    """The record of `retired`'s identifiers `moved` joining person `kept` (whose identifiers are `members`)."""

    def strength(ident: Ident) -> tuple[float, int, Ident]:
        path = new.path(ident)
        return (-min((k.confidence for k in path), default=1.0), len(path), ident)

    best = min(moved, key=strength)
    path = new.path(best)
    weakest = min(path, key=lambda k: k.confidence) if path else None
    retired_anchor = next((i for i in moved if person_id_of(i, new.key) == retired), None)
    evidence = {
        "kept_anchor": str(new.anchors[kept]),
        "retired_anchor": str(retired_anchor) if retired_anchor else "",
        "path": new.describe_path(best),
        "key": weakest.key if weakest else "",
    }
    moving = set(moved)
    kept_side = sorted(str(i) for i in members if i not in moving)
    return MergeRecord(
        merge_id=merge_id_of(kept, retired),
        kept_person_id=kept,
        retired_person_id=retired,
        method=weakest.method if weakest else "self",
        confidence=weakest.confidence if weakest else 1.0,
        evidence=evidence,
        kept_identifiers=tuple(kept_side),
        retired_identifiers=tuple(sorted(str(i) for i in moved)),
        merged_at=max((k.at for k in path), default=new.rows[best].first_seen),
    )


def _still_joined(merge: MergeRecord, new: Resolution) -> bool | None:
    """Whether the new resolution still puts the retired identifiers with the kept anchor (None: all gone)."""
    retired = [new.person(Ident.parse(i)) for i in merge.retired_identifiers]
    retired_persons = {p for p in retired if p is not None}
    if not retired_persons:
        return None  # every retired identifier left the map (erased): nothing to say
    kept_anchor = new.person(Ident.parse(merge.evidence.get("kept_anchor", "")))
    if kept_anchor is not None:
        return kept_anchor in retired_persons
    kept = {new.person(Ident.parse(i)) for i in merge.kept_identifiers} - {None}
    return bool(kept & retired_persons)


_REFUSED = {
    "contradiction": "both sides have a different login",
    "cannot_link": "a manual undo forbids it",
    "shared_device": "a shared device links nobody",
}


def _undone_by_evidence(merge: MergeRecord, new: Resolution, refusals: Mapping[Ident, list[Link]]) -> MergeRecord:
    """The merge marked undone, with what the new resolution says instead (refusals: refused links by end)."""
    retired = [Ident.parse(i) for i in merge.retired_identifiers]
    present = [i for i in retired if i in new.rows]
    anchor = Ident.parse(merge.evidence.get("retired_anchor", ""))
    ident = anchor if anchor in new.rows else present[0]
    row = new.rows[ident]
    refused = list(dict.fromkeys(k for i in retired for k in refusals.get(i, ())))
    involved = dict.fromkeys([*retired, *(end for k in refused for end in (k.a, k.b))])
    notes = [note for i in involved for note in new.notes.get(i, ())]
    kept_anchor = merge.evidence.get("kept_anchor", merge.kept_person_id)
    reason = f"{ident} is no longer joined to {kept_anchor}: it now belongs to {row.person_id} ({row.method})"
    if refused:
        reason += "; refused: " + "; ".join(f"{k.describe()} ({_REFUSED[k.status]})" for k in refused[:3])
    if notes:
        reason += "; " + "; ".join(notes[:3])
    evidence = {"identifier": str(ident), "now_person_id": row.person_id, "now_path": new.describe_path(ident)}
    if refused:
        evidence["refused"] = "; ".join(f"{k.describe()} {k.status}" for k in refused)
    if notes:
        evidence["notes"] = "; ".join(notes)
    times = [k.at for k in (*new.path(ident), *refused)] + [
        new.shared_since[i] for i in involved if i in new.shared_since
    ]
    at = max(times, default=row.last_seen)
    return replace(
        merge, status="undone", undone_by="evidence", undone_reason=reason, undone_evidence=evidence, undone_at=at
    )


def plan_changes(
    previous: Mapping[Ident, IdentityRow], new: Resolution, merges: Iterable[MergeRecord] = ()
) -> IdentityPlan:
    """Compare the previous identity map with a new resolution: rows to write, merges made and undone.

    A merge: a person id of the previous map that no longer exists because its identifiers now belong to
    another person (one record per receiving person). An undo: an active merge whose retired identifiers
    the new resolution no longer puts with the kept anchor. A merge undone by evidence and made again is
    re-activated; one undone by hand stays undone. `changed`: identifiers whose person differs from the one
    the session builder used before (the previous map, or the identifier's own id if it was not there).
    """
    rows = new.rows
    upserts = tuple(row for ident, row in sorted(rows.items()) if previous.get(ident) != row)
    deletes = tuple(row for ident, row in sorted(previous.items()) if ident not in rows)
    changed = frozenset(
        i for i in set(previous) | set(rows) if _person_or_own(previous, i, new.key) != _person_or_own(rows, i, new.key)
    )
    known = {m.merge_id: m for m in merges}
    records: dict[str, MergeRecord] = {}
    before: dict[str, list[Ident]] = defaultdict(list)
    for ident, row in previous.items():
        before[row.person_id].append(ident)
    now: dict[str, list[Ident]] = defaultdict(list)
    for ident, row in rows.items():
        now[row.person_id].append(ident)
    for retired in sorted(set(before) - set(now)):
        moved_to: dict[str, list[Ident]] = defaultdict(list)
        for ident in sorted(before[retired]):
            if ident in rows:
                moved_to[rows[ident].person_id].append(ident)
        for kept, moved in sorted(moved_to.items()):
            prior = known.get(merge_id_of(kept, retired))
            if prior is not None and prior.undone_by == "manual":
                continue  # an operator said no; the do-not-link rule keeps the sides apart
            record = _merge_record(kept, retired, moved, now[kept], new)
            if record != prior:
                records[record.merge_id] = record
    refusals: dict[Ident, list[Link]] = defaultdict(list)
    for link in new.links:
        if link.status in _REFUSED:
            refusals[link.a].append(link)
            refusals[link.b].append(link)
    for merge in sorted(known.values(), key=lambda m: m.merge_id):
        if merge.status != "active" or merge.merge_id in records:
            continue
        if _still_joined(merge, new) is False:
            records[merge.merge_id] = _undone_by_evidence(merge, new, refusals)
    inserted = sum(1 for row in upserts if row.ident not in previous)
    return IdentityPlan(upserts, deletes, tuple(records.values()), changed, inserted)


# ---------------------------------------------------------------------------------------------- Spark


@dataclass(frozen=True)
class IdentityChanges:
    """What a resolution changed: the devices and logins whose person moved (re-attribute their sessions)."""

    anonymous_ids: frozenset[str]
    user_ids: frozenset[str]
    merged: tuple[str, ...]  # merge_ids recorded (or re-activated) as active
    undone: tuple[str, ...]  # merge_ids undone by evidence in this resolution
    map_inserted: int = 0
    map_updated: int = 0
    map_deleted: int = 0

    @property
    def is_empty(self) -> bool:
        """True when the resolution wrote nothing."""
        counts = self.map_inserted or self.map_updated or self.map_deleted
        return not (self.anonymous_ids or self.user_ids or self.merged or self.undone or counts)


@dataclass(frozen=True)
class PersonLookups:
    """Who is who: (anonymous_id, person_id) and (user_id, person_id) frames from silver.identity_map."""

    by_anonymous_id: DataFrame
    by_user_id: DataFrame


class UnknownMergeError(ValueError):
    """undo_merge was given a merge_id that silver.identity_merges does not hold."""


def person_id_column(identifier_type: str, identifier: Column | str, key: bytes) -> Column:
    """Spark twin of `person_id_of`: the id of a person anchored at this identifier (null stays null)."""
    value = F.col(identifier) if isinstance(identifier, str) else identifier
    hashed = keyed_hash_column(F.concat(F.lit(f"{identifier_type}:"), value), key)
    return F.concat(F.lit("p-"), F.substring(hashed, 1, 24))


def _present(column: Column) -> Column:
    """The value when it is not blank, else null."""
    return F.when(F.trim(column) != "", column)


def trait(name: str) -> Column:
    """properties.<name>, else the identify trait of that name (a Segment identify's traits arrive in
    properties as trait.<name>), trimmed; null when blank. What identity and silver.profiles read."""
    props = F.col("properties")
    return F.coalesce(_present(F.trim(props[name])), _present(F.trim(props[f"trait.{name}"])))


def edges_of(events: DataFrame, key: bytes) -> DataFrame:
    """Bronze events -> silver.identity_edges rows: one per (device, identifier) with first/last seen and events.

    Identifiers: the device itself (anonymous_id: its whole activity, so every device reaches the map and
    a device's own person id, once visible in silver, is retired by a recorded merge when it joins
    another person); the login (user_id); the email hash; properties.device_fingerprint; and the keyed hash
    (HMAC-SHA256 under `key`) of context.ip|device.user_agent when both are sent: an IP is personal data, and
    a bare sha256 of a /24 network and a user agent is recomputed by anyone who guesses them. Blank values are
    no evidence.

    The email hash is HMAC-SHA256 under `key` (`privacy.hash_key`) of the plain sha256 hex of the address: of
    properties.email_hash as the client sent it (the lower-cased sha256 of the normalised address, as ad
    platforms take it), else of sha256(lower(trim(properties.email))); identify traits count as properties
    (`trait`). So a hashed and a raw email of one
    address link, the raw email is never output, and nobody without the key can recompute the identifier.
    """
    props = F.col("properties")
    email = trait("email")
    plain_hash = F.coalesce(F.lower(trait("email_hash")), F.sha2(F.lower(email), 256))
    email_hash = keyed_hash_column(plain_hash, key)
    ip, user_agent = _present(F.col("context.ip")), _present(F.col("device.user_agent"))
    ip_ua = F.when(ip.isNotNull() & user_agent.isNotNull(), keyed_hash_column(F.concat_ws("|", ip, user_agent), key))
    evidence = F.array(
        *(
            F.struct(F.lit(kind).alias("identifier_type"), value.alias("identifier"))
            for kind, value in (
                ("anonymous_id", F.col("anonymous_id")),
                ("user_id", _present(F.col("user_id"))),
                ("email_hash", email_hash),
                ("fingerprint", _present(props["device_fingerprint"])),
                ("ip_ua", ip_ua),
            )
        )
    )
    return (
        events.select("anonymous_id", "occurred_at", F.inline(evidence))
        .filter(F.col("identifier").isNotNull())
        .groupBy(*EDGE_KEYS)
        .agg(
            F.min("occurred_at").alias("first_seen"),
            F.max("occurred_at").alias("last_seen"),
            F.count(F.lit(1)).alias("events"),
        )
        .select(*table_contract("silver.identity_edges").column_names)
    )


def _ensure(spark: SparkSession, settings: Settings) -> None:
    ensure_tables(spark, settings, IDENTITY_TABLES)  # cheap once done: ensure_tables remembers what it created


def merge_edges(
    spark: SparkSession, settings: Settings, new_events: DataFrame, history: DataFrame | None = None
) -> MergeCounts:
    """Make silver.identity_edges exact for every device in `new_events` (a batch of bronze events).

    The edges of those devices are recomputed from all of their bronze events (`history`, read from
    bronze.events when not given; the silver job passes the device history it already holds) and replace
    the devices' rows. Re-running a batch, a replay, or a bronze batch split across silver batches
    therefore never counts an event twice, and unchanged rows are left untouched.
    """
    _ensure(spark, settings)
    devices = new_events.select("anonymous_id").distinct()
    if history is None:
        history = read_table(spark, settings, "bronze.events").join(devices, "anonymous_id", "left_semi")
    edges = edges_of(history, hash_key(settings))
    return replace_scopes(spark, settings, "silver.identity_edges", edges, EDGE_KEYS, "anonymous_id", devices)


def _utc(micros: int) -> datetime:
    """Epoch microseconds -> an aware UTC datetime (collecting TIMESTAMPs directly gives local wall time)."""
    return _EPOCH + timedelta(microseconds=micros)


def read_edges(spark: SparkSession, settings: Settings, devices: DataFrame | None = None) -> list[Edge]:
    """Every silver.identity_edges row (of `devices` only, when given), on the driver."""
    frame = read_table(spark, settings, "silver.identity_edges")
    if devices is not None:
        frame = frame.join(devices, "anonymous_id", "left_semi")
    rows = frame.select(
        *EDGE_KEYS, F.unix_micros("first_seen").alias("f"), F.unix_micros("last_seen").alias("l"), "events"
    ).collect()
    return [Edge(r.anonymous_id, r.identifier_type, r.identifier, _utc(r.f), _utc(r.l), r.events) for r in rows]


def read_identity_map(
    spark: SparkSession, settings: Settings, persons: DataFrame | None = None
) -> dict[Ident, IdentityRow]:
    """silver.identity_map on the driver, by identifier (the rows of `persons`' person_ids only, when given)."""
    frame = read_table(spark, settings, "silver.identity_map")
    if persons is not None:
        frame = frame.join(persons, "person_id", "left_semi")
    rows = frame.select(
        *MAP_KEYS,
        "person_id",
        "method",
        "confidence",
        F.unix_micros("first_seen").alias("f"),
        F.unix_micros("last_seen").alias("l"),
        "linked_by",
    ).collect()
    return {
        Ident(r.identifier_type, r.identifier): IdentityRow(
            r.identifier_type, r.identifier, r.person_id, r.method, r.confidence, _utc(r.f), _utc(r.l), r.linked_by
        )
        for r in rows
    }


def read_merges(spark: SparkSession, settings: Settings, persons: Iterable[str] | None = None) -> list[MergeRecord]:
    """silver.identity_merges on the driver (those keeping or retiring one of `persons` only, when given)."""
    columns = table_contract("silver.identity_merges").column_names
    times = ("merged_at", "undone_at")
    frame = read_table(spark, settings, "silver.identity_merges")
    if persons is not None:
        wanted = sorted(set(persons))
        frame = frame.where(F.col("kept_person_id").isin(wanted) | F.col("retired_person_id").isin(wanted))
    frame = frame.select(*(F.unix_micros(c).alias(c) if c in times else F.col(c) for c in columns))
    records = []
    for r in frame.collect():
        values = r.asDict()
        values.update({c: None if values[c] is None else _utc(values[c]) for c in times})
        values["kept_identifiers"] = tuple(values["kept_identifiers"])
        values["retired_identifiers"] = tuple(values["retired_identifiers"])
        values["evidence"] = dict(values["evidence"])
        if values["undone_evidence"] is not None:
            values["undone_evidence"] = dict(values["undone_evidence"])
        records.append(MergeRecord(**values))
    return records


def _upsert(
    spark: SparkSession,
    settings: Settings,
    table: str,
    rows: Sequence[dict[str, Any]],
    keys: tuple[str, ...],
    deletes: Sequence[dict[str, Any]] = (),
) -> None:
    """MERGE exactly these rows into a table by key (and delete `deletes`); nothing else is touched."""
    if not rows and not deletes:
        return  # no commit at all: the table version stays where it is
    contract = table_contract(table)
    schema = StructType([*contract.schema().fields, StructField("_delete", BooleanType(), False)])
    data = [{**row, "_delete": False} for row in rows] + [{**row, "_delete": True} for row in deletes]
    source = spark.createDataFrame(data, schema)
    assignments = {c: f"s.{c}" for c in contract.column_names}
    (
        DeltaTable.forPath(spark, str(settings.table_path(table)))
        .alias("t")
        .merge(source.alias("s"), " AND ".join(f"t.{k} = s.{k}" for k in keys))
        .whenMatchedDelete(condition="s._delete")
        .whenMatchedUpdate(condition="NOT s._delete", set=assignments)
        .whenNotMatchedInsert(condition="NOT s._delete", values=assignments)
        .execute()
    )


def _as_row(record: MergeRecord) -> dict[str, Any]:
    return {**asdict(record), "kept_identifiers": list(record.kept_identifiers),
            "retired_identifiers": list(record.retired_identifiers)}  # fmt: skip


@dataclass(frozen=True)
class PendingIdentity:
    """A resolution planned but not yet written: the silver job applies its person ids to sessions first and
    writes the map last, so a batch killed in between finds the same changes again when it is replayed."""

    plan: IdentityPlan
    scope: str = "whole graph"  # or "neighbourhood": what was collected and resolved

    @property
    def changes(self) -> IdentityChanges:
        plan = self.plan
        return IdentityChanges(
            anonymous_ids=frozenset(i.value for i in plan.changed if i.kind == "anonymous_id"),
            user_ids=frozenset(i.value for i in plan.changed if i.kind == "user_id"),
            merged=tuple(m.merge_id for m in plan.merges if m.status == "active"),
            undone=tuple(m.merge_id for m in plan.merges if m.status == "undone"),
            map_inserted=plan.inserted,
            map_updated=len(plan.upserts) - plan.inserted,
            map_deleted=len(plan.deletes),
        )

    def identity_map(self, spark: SparkSession, settings: Settings) -> DataFrame:
        """silver.identity_map as it will be once written: the table with this plan's rows swapped in."""
        contract = table_contract("silver.identity_map")
        current = read_table(spark, settings, "silver.identity_map").select(*contract.column_names)
        if not (self.plan.upserts or self.plan.deletes):
            return current
        rows = [{**asdict(r), "_keep": True} for r in self.plan.upserts]
        rows += [{**asdict(r), "_keep": False} for r in self.plan.deletes]
        schema = StructType([*contract.schema().fields, StructField("_keep", BooleanType(), False)])
        touched = spark.createDataFrame(rows, schema)
        kept = touched.filter("_keep").select(*contract.column_names)
        return current.join(touched.select(*MAP_KEYS), list(MAP_KEYS), "left_anti").unionByName(kept)


@dataclass(frozen=True)
class Neighbourhood:
    """The part of the identity graph a set of devices can change (`neighbourhood`), as Spark frames."""

    devices: DataFrame  # anonymous_id: every device whose map rows may change
    persons: DataFrame  # person_id: every person of the previous map holding one of their identifiers
    crowded: DataFrame  # identifier_type, identifier, devices: probabilistic evidence on too many devices
    cached: tuple[DataFrame, ...] = ()  # what the closure persisted: `release` frees it

    def release(self) -> None:
        for frame in self.cached:
            frame.unpersist()


def neighbourhood(spark: SparkSession, settings: Settings, devices: DataFrame, cfg: IdentityConfig) -> Neighbourhood:
    """Close `devices` (anonymous_id) over everything their resolution depends on, in Spark: the devices that
    share a login, an email hash, a fingerprint or an IP + user agent with one of them, and every identifier
    of a person the previous map gives one of them; repeated until nothing is added.

    A fingerprint or IP + user agent on more devices than its limit links nobody, so it is followed only to
    the devices the previous map says it attached (`linked_by`): it may have linked them before it became
    crowded, and their persons' other rows follow as members. Any other device carrying it cannot change
    through it, so a NAT's thousands of devices are not pulled into every batch. A map row written before
    `linked_by` existed (null) is followed when its method is fingerprint or ip_ua, as it was then.

    Resolving the edges of these devices gives each of them exactly the row a resolution of the whole graph
    would (union-find components never cross the boundary, and every link inside it is seen), and the
    previous map's rows of these persons are every row that can change. Nothing but the result is collected.
    The frames every round reads are persisted as the first round computes them (`release` frees them).
    """
    edges = read_table(spark, settings, "silver.identity_edges").select(*EDGE_KEYS)
    id_map = read_table(spark, settings, "silver.identity_map").select(*MAP_KEYS, "person_id", "method", "linked_by")
    limit = F.when(F.col("identifier_type") == "fingerprint", F.lit(cfg.fingerprint_max_devices)).otherwise(
        F.lit(cfg.ip_ua_max_devices)
    )
    crowded = (
        edges.where(F.col("identifier_type").isin(*_CROWDABLE))
        .groupBy("identifier_type", "identifier")
        .agg(F.count("*").alias("devices"))
        .where(F.col("devices") > limit.cast("long"))
        .persist()
    )
    evidence = edges.where(F.col("identifier_type") != "anonymous_id").persist()
    attached = id_map.where(F.col("identifier_type") == "anonymous_id").select(
        F.col("identifier").alias("anonymous_id"), F.col("linked_by").alias("identifier"), "method"
    )
    by_value = attached.where(F.col("identifier") != "").select("anonymous_id", "identifier")  # null: not kept
    unrecorded = attached.where(F.col("identifier").isNull() & F.col("method").isin(*_CROWDABLE))
    too_common = evidence.join(crowded, list(MAP_KEYS), "left_semi")
    reach = (
        evidence.join(crowded, list(MAP_KEYS), "left_anti")
        .unionByName(too_common.join(by_value, ["anonymous_id", "identifier"], "left_semi"))
        .unionByName(too_common.join(unrecorded.select("anonymous_id"), "anonymous_id", "left_semi"))
    )
    reach = reach.persist()  # value -> the devices the closure goes on to
    # each round's devices are checkpointed, not persisted: a persisted frame keeps its plan, and a round's plan
    # reads the previous round's devices three times, so plans grew threefold a round (40 s to plan a third)
    current = devices.select("anonymous_id").distinct().localCheckpoint(eager=True)
    size = current.count()
    # the neighbourhood's side of each join is broadcast: it is what the plan collects anyway, and the tables'
    # side is then scanned once a round without a shuffle
    while True:
        values = evidence.join(F.broadcast(current), "anonymous_id", "left_semi").select(*MAP_KEYS).distinct()
        own = current.select(F.lit("anonymous_id").alias("identifier_type"), F.col("anonymous_id").alias("identifier"))
        asked = F.broadcast(values.unionByName(own))
        persons = id_map.join(asked, list(MAP_KEYS), "left_semi").select("person_id").distinct()
        members = id_map.join(F.broadcast(persons), "person_id", "left_semi").select(*MAP_KEYS)
        member_devices = members.where(F.col("identifier_type") == "anonymous_id").select(
            F.col("identifier").alias("anonymous_id")
        )
        sharing = reach.join(F.broadcast(values.unionByName(members)), list(MAP_KEYS), "left_semi")
        sharing = sharing.select("anonymous_id")
        grown = current.unionByName(sharing).unionByName(member_devices).distinct().localCheckpoint(eager=True)
        grown_size = grown.count()
        if grown_size == size:  # grown holds current: nothing was added
            return Neighbourhood(current, persons, crowded, (crowded, evidence, reach))
        current, size = grown, grown_size


def edge_count(spark: SparkSession, settings: Settings) -> int:
    """silver.identity_edges' rows (Delta answers from its log's file statistics, without a scan)."""
    return read_table(spark, settings, "silver.identity_edges").count()


def plan_identities(
    spark: SparkSession, settings: Settings, cfg: IdentityConfig | None = None, devices: DataFrame | None = None
) -> PendingIdentity:
    """Re-resolve identities from silver.identity_edges; nothing is written (see `write_identities`).

    The whole graph: every edge, map row and merge is collected and resolved on the driver, about 1 KB of
    driver memory per edge (measured: 200k edges, 180 MB peak). That is the plan without `devices`, and with
    them while the graph has at most `settings.identity_collect_max_edges` edges (a handful of Spark jobs).
    Above that, only the `neighbourhood` of `devices` (those whose edges a batch changed) is collected and
    resolved, and the plan is the same as the whole graph's for every row it can change: driver memory grows
    with the persons a batch touches, not with the map (bench/identity_scale.py).
    """
    cfg = cfg or load_identity_config(identity_config_file(settings))
    _ensure(spark, settings)
    key = hash_key(settings)
    if devices is not None and edge_count(spark, settings) <= settings.identity_collect_max_edges:
        devices = None  # small enough to collect: fewer Spark jobs than the closure's rounds
    if devices is None:
        edges, crowded = read_edges(spark, settings), {}
        previous = read_identity_map(spark, settings)
        merges = read_merges(spark, settings)
    else:
        part = neighbourhood(spark, settings, devices, cfg)
        try:
            edges = read_edges(spark, settings, part.devices)
            previous = read_identity_map(spark, settings, part.persons)
            # the crowded values these edges carry (collected for them only: there is one per NAT in the graph)
            present = sorted({(e.identifier_type, e.identifier) for e in edges if e.identifier_type in _CROWDABLE})
            crowded = {}
            if present:
                carried = spark.createDataFrame(present, "identifier_type STRING, identifier STRING")
                rows = part.crowded.join(carried, list(MAP_KEYS), "left_semi").collect()
                crowded = {(r.identifier_type, r.identifier): r.devices for r in rows}
        finally:
            part.release()
        nodes = {Ident(e.identifier_type, e.identifier) for e in edges if e.identifier_type in _ANCHOR_RANK}
        candidates = {row.person_id for row in previous.values()} | {person_id_of(n, key) for n in nodes}
        merges = read_merges(spark, settings, candidates)
    rules = [m.cannot_link() for m in merges if m.status == "undone" and m.undone_by == "manual"]
    check_person_ids(previous, key, settings)
    new = resolve(edges, cfg, rules, key=key, crowded=crowded)
    return PendingIdentity(plan_changes(previous, new, merges), "whole graph" if devices is None else "neighbourhood")


class PersonIdsChanged(RuntimeError):
    """silver.identity_map's person ids were made under another hash key (or before person ids were keyed)."""


def check_person_ids(previous: Mapping[Ident, IdentityRow], key: bytes, settings: Settings) -> None:
    """Refuse to resolve on top of a map whose person ids another key made: every person would be retired
    and re-created as a merge, and each table would hold two ids for one person. An anchor's row (method
    self) always has its anchor's id, so a few of them tell."""
    anchors = [row for row in previous.values() if row.method == "self"][:100]
    stale = [row for row in anchors if row.person_id != person_id_of(row.ident, key)]
    if stale:
        raise PersonIdsChanged(
            f"silver.identity_map under {settings.lakehouse} holds person ids made with another hash key "
            f"({len(stale)} of {len(anchors)} anchors checked, e.g. {stale[0].identifier_type} anchor of "
            f"{stale[0].person_id}), or before person ids were keyed. Set INTENTLAKE_HASH_KEY back to the key it "
            "was built with, or rebuild silver and gold from bronze: move the silver and gold tables and their "
            "checkpoints aside and run the pipeline again."
        )


def write_identities(spark: SparkSession, settings: Settings, pending: PendingIdentity) -> IdentityChanges:
    """Write a planned resolution: merges first, then the map (a run killed in between is repaired by the
    next one: it finds the same changes and writes the same merge ids). Unchanged rows are not written, and
    a resolution that changes nothing commits nothing. One writer at a time: the silver job only."""
    plan = pending.plan
    _upsert(spark, settings, "silver.identity_merges", [_as_row(m) for m in plan.merges], ("merge_id",))
    _upsert(
        spark,
        settings,
        "silver.identity_map",
        [asdict(r) for r in plan.upserts],
        MAP_KEYS,
        deletes=[asdict(r) for r in plan.deletes],
    )
    return pending.changes


def resolve_identities(spark: SparkSession, settings: Settings, cfg: IdentityConfig | None = None) -> IdentityChanges:
    """Re-resolve every identity from silver.identity_edges and write the map's changes, merges and undos
    (`plan_identities` then `write_identities`)."""
    return write_identities(spark, settings, plan_identities(spark, settings, cfg))


def undo_merge(
    spark: SparkSession,
    settings: Settings,
    merge_id: str,
    reason: str,
    cfg: IdentityConfig | None = None,
    now: datetime | None = None,
) -> IdentityChanges:
    """Undo a merge by hand: record a do-not-link rule between its two sides, then re-resolve.

    From then on no identifier of the kept side joins one of the retired side, whatever the evidence
    (logins included: an operator's decision overrides it; sessions that carry a login still go to that
    login's person). Undoing an already manually undone merge only re-resolves.
    """
    if not reason or not reason.strip():
        raise ValueError(f"undo_merge {merge_id}: give a reason (it is stored in silver.identity_merges)")
    cfg = cfg or load_identity_config(identity_config_file(settings))
    _ensure(spark, settings)
    merge = next((m for m in read_merges(spark, settings) if m.merge_id == merge_id), None)
    if merge is None:
        listing = "SELECT merge_id, kept_person_id, retired_person_id, status FROM silver.identity_merges"
        raise UnknownMergeError(f"silver.identity_merges has no merge_id {merge_id!r}; list them with: {listing}")
    if merge.undone_by != "manual":
        undone = replace(
            merge,
            status="undone",
            undone_by="manual",
            undone_reason=reason.strip(),
            undone_evidence={
                "rule": "cannot_link",
                "kept_identifiers": str(len(merge.kept_identifiers)),
                "retired_identifiers": str(len(merge.retired_identifiers)),
                "previous_status": merge.status,
            },
            undone_at=now or datetime.now(UTC),
        )
        _upsert(spark, settings, "silver.identity_merges", [_as_row(undone)], ("merge_id",))
    return resolve_identities(spark, settings, cfg)


def person_of(identity_map: DataFrame) -> PersonLookups:
    """(anonymous_id -> person_id) and (user_id -> person_id) lookups from silver.identity_map."""

    def by(kind: str) -> DataFrame:
        return identity_map.filter(F.col("identifier_type") == kind).select(
            F.col("identifier").alias(kind), "person_id"
        )

    return PersonLookups(by_anonymous_id=by("anonymous_id"), by_user_id=by("user_id"))


def with_person_id(frame: DataFrame, identity_map: DataFrame, key: bytes) -> DataFrame:
    """Set person_id on rows with anonymous_id and user_id (sessions, events): the login's person, else the
    device's, else the id a login or device has on its own before resolution has seen it.
    """
    lookups = person_of(identity_map)
    users = lookups.by_user_id.select(F.col("user_id").alias("_pu_key"), F.col("person_id").alias("_pu"))
    devices = lookups.by_anonymous_id.select(F.col("anonymous_id").alias("_pa_key"), F.col("person_id").alias("_pa"))
    joined = frame.join(users, frame["user_id"] == users["_pu_key"], "left").join(
        devices, frame["anonymous_id"] == devices["_pa_key"], "left"
    )
    person = F.coalesce(
        F.col("_pu"),
        F.col("_pa"),
        F.when(_present(F.col("user_id")).isNotNull(), person_id_column("user_id", "user_id", key)),
        person_id_column("anonymous_id", "anonymous_id", key),
    )
    return joined.withColumn("person_id", person).drop("_pu_key", "_pu", "_pa_key", "_pa")
