"""config/destinations.yaml: where segments go, checked before anything is sent.

A destination names its type (hubspot, braze, mailchimp, webhook, file), its audience (segments and an
optional Spark SQL filter over the audience columns), the key the destination matches persons on, the
consent purpose a person must have granted, the field mapping and the type's options. Limits come from
each vendor's documentation (a batch larger than the vendor accepts is refused here, naming the limit).
Secrets never sit in the file: `credentials(name)` reads INTENTLAKE_DEST_<NAME>_TOKEN and _URL.
Pure Python: validate-config and the DAG files read it without Spark.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from spark_jobs.config import FORBIDDEN_FUNCTIONS, load_segments, referenced_names
from spark_jobs.errors import InvalidConfigError, read_yaml
from spark_jobs.settings import Settings

TYPES = ("hubspot", "braze", "mailchimp", "webhook", "file")
MATCH_KEYS = ("email", "user_id")
PURPOSES = ("analytics", "marketing", "personalization")
ON_LEAVE = ("remove", "delete")
# What an audience filter and a field mapping may read: one row per person in the audience frame
AUDIENCE_COLUMNS = (
    "segment",
    "intent_score",
    "sessions",
    "last_seen_at",
    "top_contributions",
    "best_local_hour",
    "timezone",
    "content_channel",
    "content_rule",
    "tone",
    "format",
    "cta",
)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_FIELD = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")


@dataclass(frozen=True)
class TypeSpec:
    """What a destination type accepts: its options and the vendor's documented limits."""

    options: frozenset[str]
    max_batch: int
    default_batch: int
    default_rate: float  # requests per second
    required: tuple[str, ...] = ()
    default_url: str | None = None


# Limits: HubSpot 100 inputs per batch call and 100 requests / 10 s (Free/Starter app); Braze 75 objects per
# /users/track request and 3,000 requests / 3 s; Mailchimp 500 members per batch call (and 10 connections).
# Default rates keep rate * window + burst - 1 within the vendor's window (transport.py): Braze's 990/s with a
# burst of 10 sends at most 2,979 requests in any 3 s.
SPECS: dict[str, TypeSpec] = {
    "hubspot": TypeSpec(
        frozenset({"list_id", "batch_size", "requests_per_second", "burst", "concurrency", "content_channel"}),
        100,
        100,
        10.0,
        default_url="https://api.hubapi.com",
    ),
    "braze": TypeSpec(
        frozenset(
            {"batch_size", "requests_per_second", "burst", "concurrency", "audience_attribute", "content_channel"}
        ),
        75,
        75,
        990.0,
    ),
    "mailchimp": TypeSpec(
        frozenset(
            {
                "list_id",
                "tag",
                "tag_id",
                "batch_size",
                "requests_per_second",
                "burst",
                "concurrency",
                "status_if_new",
                "content_channel",
            }
        ),
        500,
        500,
        10.0,
        required=("list_id",),
    ),
    "webhook": TypeSpec(
        frozenset({"url", "batch_size", "requests_per_second", "burst", "concurrency", "content_channel"}),
        10_000,
        500,
        20.0,
    ),
    "file": TypeSpec(frozenset({"path", "format", "content_channel"}), 10**9, 10**9, 0.0, required=("path",)),
}


@dataclass(frozen=True)
class Destination:
    name: str
    type: str
    segments: tuple[str, ...]
    filter: str | None
    match_key: str
    consent: str
    fields: dict[str, str]
    on_leave: str
    options: dict[str, object] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.options.get("batch_size", SPECS[self.type].default_batch))

    @property
    def requests_per_second(self) -> float:
        return float(self.options.get("requests_per_second", SPECS[self.type].default_rate))

    @property
    def burst(self) -> int:
        """Requests the limiter may send back to back to catch up on lost time: options.burst, else 10 ms
        worth of the rate (at least 1: evenly spaced, as the low limits need)."""
        return int(self.options.get("burst", max(1, round(self.requests_per_second / 100))))

    @property
    def concurrency(self) -> int:
        """Batches in flight at once: options.concurrency, else one per 100 requests/s allowed (1 to 8), so a
        high limit (Braze's 1,000/s) is reached despite each request's round trip, and a low one is not
        hurried. Mailchimp allows 10 connections at once; keep it at most that."""
        if "concurrency" in self.options:
            return int(self.options["concurrency"])
        return max(1, min(8, int(self.requests_per_second // 100)))

    @property
    def content_channel(self) -> str | None:
        channel = self.options.get("content_channel")
        return None if channel is None else str(channel)

    @property
    def env_prefix(self) -> str:
        return f"INTENTLAKE_DEST_{self.name.upper()}"


@dataclass(frozen=True)
class Credentials:
    """A destination's secret and base URL, from the environment (never from config, never logged)."""

    token: str | None
    url: str | None

    def __repr__(self) -> str:  # keeps the token out of logs and tracebacks
        return f"Credentials(token={'set' if self.token else 'unset'}, url={self.url!r})"


def credentials(destination: Destination, environ: dict[str, str] | None = None) -> Credentials:
    """INTENTLAKE_DEST_<NAME>_TOKEN and INTENTLAKE_DEST_<NAME>_URL (the URL falls back to options.url, then
    the vendor's public endpoint; Mailchimp's data centre comes from the key's -<dc> suffix)."""
    env = os.environ if environ is None else environ
    token = env.get(f"{destination.env_prefix}_TOKEN") or None
    url = env.get(f"{destination.env_prefix}_URL") or destination.options.get("url")
    url = url or SPECS[destination.type].default_url
    if url is None and destination.type == "mailchimp" and token and "-" in token:
        url = f"https://{token.rsplit('-', 1)[1]}.api.mailchimp.com/3.0"
    return Credentials(token, None if url is None else str(url).rstrip("/"))


def _strings(path: Path, where: str, value: object, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidConfigError(path, where, f"expected {what}: a name or a non-empty list of names")
    return tuple(v.strip() for v in value)


def _one_of(path: Path, where: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidConfigError(path, where, f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _check_filter(path: Path, where: str, expression: object) -> str | None:
    if expression is None:
        return None
    if isinstance(expression, bool) or not isinstance(expression, str) or not expression.strip():
        raise InvalidConfigError(path, where, "expected a Spark SQL boolean expression over the audience columns")
    lowered = expression.lower()
    for fn in FORBIDDEN_FUNCTIONS:
        if re.search(rf"\b{fn}\s*\(", lowered):
            raise InvalidConfigError(path, where, f"function {fn}() is not allowed in filters")
    unknown = referenced_names(expression) - set(AUDIENCE_COLUMNS)
    if unknown:
        raise InvalidConfigError(
            path, where, f"unknown column(s) {sorted(unknown)} in {expression!r}; available: {list(AUDIENCE_COLUMNS)}"
        )
    return expression.strip()


def _options(path: Path, where: str, kind: str, options: object) -> dict[str, object]:
    spec = SPECS[kind]
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidConfigError(path, where, "expected a mapping")
    unknown = sorted(set(options) - spec.options)
    if unknown:
        allowed = sorted(spec.options)
        raise InvalidConfigError(path, f"{where}: {unknown[0]}", f"not an option of {kind}; allowed: {allowed}")
    for name in spec.required:
        if not options.get(name):
            raise InvalidConfigError(path, f"{where}: {name}", f"required for a {kind} destination")
    if "batch_size" in options:
        size = options["batch_size"]
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= spec.max_batch:
            raise InvalidConfigError(
                path, f"{where}: batch_size", f"{size!r}: expected 1 to {spec.max_batch} (the {kind} API's limit)"
            )
    if "concurrency" in options:
        workers = options["concurrency"]
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 16:
            raise InvalidConfigError(path, f"{where}: concurrency", f"{workers!r}: expected 1 to 16 batches in flight")
    if "burst" in options:
        burst = options["burst"]
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise InvalidConfigError(path, f"{where}: burst", f"{burst!r}: expected a whole number of requests >= 1")
    if "requests_per_second" in options:
        rate = options["requests_per_second"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise InvalidConfigError(path, f"{where}: requests_per_second", f"{rate!r}: expected a positive number")
    if kind == "file" and options.get("format", "csv") not in ("csv", "parquet"):
        raise InvalidConfigError(path, f"{where}: format", f"{options['format']!r} is not one of csv, parquet")
    if kind == "mailchimp" and options.get("status_if_new", "transactional") not in (
        "subscribed",
        "pending",
        "transactional",
    ):
        raise InvalidConfigError(path, f"{where}: status_if_new", "expected subscribed, pending or transactional")
    return dict(options)


def load_destinations(path: Path, segment_names: tuple[str, ...] | None = None) -> tuple[Destination, ...]:
    """Read and check config/destinations.yaml. `segment_names`: config/segments.yaml's segments, which an
    audience must name (checked when given). Raises InvalidConfigError naming the destination and key."""
    doc = read_yaml(path)
    if doc is None:
        return ()
    if not isinstance(doc, dict) or set(doc) - {"destinations"}:
        raise InvalidConfigError(path, "file", "expected a mapping with one key, destinations (a list)")
    items = doc.get("destinations") or []
    if not isinstance(items, list):
        raise InvalidConfigError(path, "destinations", "expected a list of destinations")
    found: list[Destination] = []
    names: set[str] = set()
    allowed_keys = {"name", "type", "audience", "match_key", "consent", "fields", "on_leave", "options", "description"}
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise InvalidConfigError(path, f"destination #{number}", "expected a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidConfigError(
                path, f"destination #{number}: name", f"{name!r}: expected letters, digits and _ (a letter first)"
            )
        where = f"destination '{name}'"
        if name.lower() in names:
            raise InvalidConfigError(path, where, "is defined twice (names are case-insensitive: they name env vars)")
        names.add(name.lower())
        unknown = sorted(set(item) - allowed_keys)
        if unknown:
            raise InvalidConfigError(path, f"{where}: {unknown[0]}", f"unknown key; allowed: {sorted(allowed_keys)}")
        kind = _one_of(path, f"{where}: type", item.get("type"), TYPES)
        audience = item.get("audience")
        if not isinstance(audience, dict) or set(audience) - {"segments", "filter"}:
            raise InvalidConfigError(
                path, f"{where}: audience", "expected a mapping with segments and an optional filter"
            )
        segments = _strings(path, f"{where}: audience: segments", audience.get("segments"), "segments")
        if segment_names is not None:
            for segment in segments:
                if segment not in segment_names:
                    raise InvalidConfigError(
                        path, f"{where}: audience: segments", f"{segment!r} is not a segment of {list(segment_names)}"
                    )
        where_filter = f"{where}: audience: filter"
        audience_filter = _check_filter(path, where_filter, audience.get("filter"))
        match_key = _one_of(path, f"{where}: match_key", item.get("match_key"), MATCH_KEYS)
        consent = _one_of(path, f"{where}: consent", item.get("consent"), PURPOSES)
        on_leave = _one_of(path, f"{where}: on_leave", item.get("on_leave", "remove"), ON_LEAVE)
        fields = item.get("fields") or {}
        if not isinstance(fields, dict):
            raise InvalidConfigError(path, f"{where}: fields", "expected a mapping of audience column -> field name")
        for column, target in fields.items():
            if column not in AUDIENCE_COLUMNS:
                raise InvalidConfigError(
                    path, f"{where}: fields: {column}", f"not an audience column; available: {list(AUDIENCE_COLUMNS)}"
                )
            if not isinstance(target, str) or not _FIELD.match(target):
                raise InvalidConfigError(path, f"{where}: fields: {column}", f"{target!r} is not a valid field name")
        if len(set(fields.values())) != len(fields):
            raise InvalidConfigError(path, f"{where}: fields", "two columns map to the same field")
        options = _options(path, f"{where}: options", kind, item.get("options"))
        url_variable = f"INTENTLAKE_DEST_{name.upper()}_URL"
        if kind == "webhook" and not options.get("url") and not os.environ.get(url_variable):
            raise InvalidConfigError(path, f"{where}: options: url", f"required (or {url_variable})")
        found.append(
            Destination(name, kind, segments, audience_filter, match_key, consent, dict(fields), on_leave, options)
        )
    return tuple(found)


def configured(settings: Settings) -> tuple[Destination, ...]:
    """The settings' config/destinations.yaml, checked against config/segments.yaml's segment names: what
    the sync, erasure, validate-config and the segment_sync DAG read."""
    names = tuple(rule.name for rule in load_segments(settings.segments_file))
    return load_destinations(settings.destinations_file, names)
