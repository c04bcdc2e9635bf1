"""Event context for silver: each event's time zone and local time, daypart, and the device, OS and browser
its user agent names.

The rules are pure functions, unit-tested without Spark: `resolve_timezone` (the event's own zone, else
its lat/lon, else its IP), `daypart`, `session_phase` and `parse_user_agent`. `add_context` applies them
to a DataFrame of canonical events without calling Python per event: it resolves each distinct position/IP
and each distinct user agent once, in Arrow batches, and joins the answers back. Local times are then
plain Spark SQL, so daylight-saving changes are handled by the JVM's time zone rules.

Everything is offline: positions resolve with timezonefinder's bundled polygons, IPs with the operator's
table in config/ip_timezones.csv, user agents with ua-parser's bundled regexes.
"""

from __future__ import annotations

import csv
import functools
import ipaddress
import math
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import ua_parser  # picks the Rust regex backend by itself when ua-parser-rs is installed (~25x faster)
import yaml
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spark_jobs.config import InvalidConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from timezonefinder import TimezoneFinder

TZ_SOURCES = ("event", "geo", "ip")
DEVICE_TYPES = ("mobile", "tablet", "desktop", "bot")
CONTEXT_COLUMNS = (
    "tz", "tz_source", "local_time", "local_hour", "local_weekday", "daypart", "ua_device_type", "ua_os",
    "ua_browser",
)  # fmt: skip

# Files in the tz directory that zoneinfo opens but that name no place.
_PSEUDO_ZONES = frozenset({"localtime", "Factory", "posixrules"})
_UTC_SESSION_ZONES = ("UTC", "Etc/UTC", "GMT", "Etc/GMT", "Z", "+00:00")
_UA_CACHE_SIZE = 100_000


# --- time zones --------------------------------------------------------------------------------------


@functools.cache
def iana_zones() -> frozenset[str]:
    """The IANA zone names this Python's tz database knows (read once per process)."""
    return frozenset(zoneinfo.available_timezones()) - _PSEUDO_ZONES


def is_iana_zone(name: object, zones: frozenset[str] | None = None) -> bool:
    """Whether `name` is a zone we can convert to: a known IANA name (exact spelling), not just any text."""
    return isinstance(name, str) and name in (iana_zones() if zones is None else zones)


@functools.cache
def _finder() -> TimezoneFinder:
    """One finder per process: building one opens ~32 MB of bundled polygons, about half a second."""
    from timezonefinder import TimezoneFinder

    return TimezoneFinder()


def zone_at(lat: float | None, lon: float | None) -> str | None:
    """The zone at a position, or None when the position is missing, not finite or out of range."""
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None
    return _finder().timezone_at(lng=lon, lat=lat)


@dataclass(frozen=True, eq=False)  # eq=False: hashable by identity, as a member of frozen rule sets
class IpTimezones:
    """IP network -> IANA zone, longest prefix first (config/ip_timezones.csv, an operator's GeoIP export).

    Networks are grouped by prefix length; a lookup masks the address once per length present, longest
    first, and does a dict lookup, so its cost does not grow with the number of networks.
    """

    v4: tuple[tuple[int, dict[int, str]], ...] = ()  # (prefix length, {network >> host bits: zone})
    v6: tuple[tuple[int, dict[int, str]], ...] = ()

    @classmethod
    def load(cls, path: Path) -> IpTimezones:
        """Read a `cidr,timezone` csv; a bad line raises InvalidConfigError naming the file, line and value."""
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: spreadsheet exports add a BOM
        except OSError as exc:
            raise InvalidConfigError(path, "file", f"cannot be read ({exc.strerror or exc})") from None
        rows = [(number, line) for number, line in enumerate(lines, start=1)
                if line.strip() and not line.lstrip().startswith("#")]  # fmt: skip
        if not rows or [c.strip() for c in next(csv.reader([rows[0][1]]))] != ["cidr", "timezone"]:
            where = f"line {rows[0][0]}" if rows else "file"
            raise InvalidConfigError(path, where, "the first line that is not a comment must be the header "
                                     "'cidr,timezone'")  # fmt: skip
        entries: list[tuple[int, str, str]] = []
        for number, line in rows[1:]:
            fields = [field.strip() for field in next(csv.reader([line]))]
            if len(fields) != 2:
                raise InvalidConfigError(path, f"line {number}", f"{line!r} has {len(fields)} field(s); expected "
                                         "two, cidr,timezone, such as 192.0.2.0/24,Europe/London")  # fmt: skip
            entries.append((number, fields[0], fields[1]))
        return cls.from_entries(entries, path)

    @classmethod
    def from_entries(cls, entries: Iterable[tuple[int, str, str]], path: Path) -> IpTimezones:
        """(line number, cidr, zone) rows -> a table; a bad CIDR or zone, or a CIDR listed twice, is an error."""
        by_version: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
        for number, cidr, zone in entries:
            try:
                network = ipaddress.ip_network(cidr)
            except ValueError as exc:
                raise InvalidConfigError(path, f"line {number}", f"cidr {cidr!r} is not an IPv4 or IPv6 network "
                                         f"({exc})") from None  # fmt: skip
            if not is_iana_zone(zone):
                raise InvalidConfigError(path, f"line {number}", f"timezone {zone!r} is not an IANA time zone "
                                         "name such as Europe/Berlin or America/New_York")  # fmt: skip
            if network in seen:
                raise InvalidConfigError(path, f"line {number}", f"cidr {cidr!r} is already listed on line "
                                         f"{seen[network]}")  # fmt: skip
            seen[network] = number
            host_bits = network.max_prefixlen - network.prefixlen
            table = by_version[network.version].setdefault(network.prefixlen, {})
            table[int(network.network_address) >> host_bits] = zone
        return cls(
            v4=tuple(sorted(by_version[4].items(), reverse=True)),
            v6=tuple(sorted(by_version[6].items(), reverse=True)),
        )

    def __repr__(self) -> str:  # an operator's GeoIP export has millions of networks
        return f"IpTimezones({len(self)} networks)"

    def __len__(self) -> int:
        return sum(len(table) for _, table in (*self.v4, *self.v6))

    def lookup(self, ip: str | None) -> str | None:
        """The zone of the most specific network holding `ip`; None for no match or text that is not an IP."""
        if not ip:
            return None
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:192.0.2.1 is an IPv4 client behind a dual-stack socket
        value, bits, groups = int(address), address.max_prefixlen, self.v4 if address.version == 4 else self.v6
        for prefix_length, table in groups:
            zone = table.get(value >> (bits - prefix_length))
            if zone is not None:
                return zone
        return None


def resolve_timezone(
    event_tz: str | None,
    lat: float | None,
    lon: float | None,
    ip: str | None,
    ip_table: IpTimezones,
    zones: frozenset[str] | None = None,
) -> tuple[str | None, str | None]:
    """(IANA zone, source) for one event: its own zone ("event"), else its position ("geo"), else its IP
    ("ip"), else (None, None). Anything unusable falls through to the next source rather than failing.

    zones: the zone names that count as valid; by default this Python's tz database. add_context narrows
    it to the zones Spark's JVM also knows, so a zone newer than the JVM's tz data falls through instead of
    failing the batch.
    """
    zones = iana_zones() if zones is None else zones
    if is_iana_zone(event_tz, zones):
        return event_tz, "event"
    for zone, source in ((zone_at(lat, lon), "geo"), (ip_table.lookup(ip), "ip")):
        if is_iana_zone(zone, zones):
            return zone, source
    return None, None


# --- config/context.yaml -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Daypart:
    name: str
    start_hour: int


_PHASE_KEYS = ("browsing_min_events", "deep_min_page_depth", "deep_min_product_views")
_TOP_KEYS = ("dayparts", "session_phase", "engaged_gap_cap_seconds")


@dataclass(frozen=True)
class ContextConfig:
    """config/context.yaml: dayparts of the local day, session-phase thresholds and the engaged-time gap cap."""

    dayparts: tuple[Daypart, ...]
    browsing_min_events: int
    deep_min_page_depth: int
    deep_min_product_views: int
    engaged_gap_cap_seconds: float

    @classmethod
    def load(cls, path: Path) -> ContextConfig:
        """Read and check the file; every problem is an InvalidConfigError naming the file and the key."""
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidConfigError(path, "file", f"cannot be read as YAML ({exc})") from None
        if not isinstance(doc, dict):
            raise InvalidConfigError(path, "file", f"expected a mapping with keys {list(_TOP_KEYS)}")
        _no_unknown_keys(path, "file", doc, _TOP_KEYS)
        phase = doc.get("session_phase")
        if not isinstance(phase, dict):
            raise InvalidConfigError(path, "session_phase", f"must be a mapping with {list(_PHASE_KEYS)}")
        _no_unknown_keys(path, "session_phase", phase, _PHASE_KEYS)
        cap = doc.get("engaged_gap_cap_seconds")
        if isinstance(cap, bool) or not isinstance(cap, int | float) or not 0 < cap < math.inf:
            raise InvalidConfigError(path, "engaged_gap_cap_seconds", f"needs a positive number of seconds, "
                                     f"got {cap!r}")  # fmt: skip
        thresholds = {key: _positive_int(path, f"session_phase.{key}", phase.get(key)) for key in _PHASE_KEYS}
        return cls(
            dayparts=_load_dayparts(path, doc.get("dayparts")),
            browsing_min_events=thresholds["browsing_min_events"],
            deep_min_page_depth=thresholds["deep_min_page_depth"],
            deep_min_product_views=thresholds["deep_min_product_views"],
            engaged_gap_cap_seconds=float(cap),
        )

    def daypart_column(self, local_hour: Column) -> Column:
        """`daypart` as a Spark CASE expression (null for a null hour)."""
        latest_first = sorted(self.dayparts, key=lambda part: part.start_hour, reverse=True)
        case = F.when(local_hour >= latest_first[0].start_hour, F.lit(latest_first[0].name))
        for part in latest_first[1:]:
            case = case.when(local_hour >= part.start_hour, F.lit(part.name))
        return case


def _no_unknown_keys(path: Path, where: str, mapping: dict[Any, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(key) for key in set(mapping) - set(allowed))
    if unknown:
        raise InvalidConfigError(path, where, f"unknown keys {unknown}; allowed: {', '.join(allowed)}")


def _positive_int(path: Path, where: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfigError(path, where, f"needs a whole number of at least 1, got {value!r}")
    return value


def _load_dayparts(path: Path, raw: object) -> tuple[Daypart, ...]:
    if not isinstance(raw, list) or not raw:
        raise InvalidConfigError(path, "dayparts", "must be a non-empty list of {name, start_hour}, the first "
                                 "starting at 0")  # fmt: skip
    parts: list[Daypart] = []
    for i, spec in enumerate(raw, start=1):
        where = f"dayparts #{i}"
        if not isinstance(spec, dict):
            raise InvalidConfigError(path, where, "must be a mapping {name, start_hour}")
        _no_unknown_keys(path, where, spec, ("name", "start_hour"))
        name, start = spec.get("name"), spec.get("start_hour")
        if not isinstance(name, str) or not name.strip():
            raise InvalidConfigError(path, where, "needs a non-empty name")
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 23:
            raise InvalidConfigError(path, f"{where} ({name})", f"start_hour must be a whole hour 0-23, got "
                                     f"{start!r}")  # fmt: skip
        if not parts and start != 0:
            raise InvalidConfigError(path, f"{where} ({name})", f"the first daypart must start at hour 0; hours "
                                     f"0-{start - 1} would have no daypart")  # fmt: skip
        if parts and start <= parts[-1].start_hour:
            raise InvalidConfigError(path, f"{where} ({name})", f"start_hour {start} overlaps "
                                     f"'{parts[-1].name}' (starts at {parts[-1].start_hour}); list dayparts "
                                     "in increasing start_hour order, each starting at a new hour")  # fmt: skip
        parts.append(Daypart(name.strip(), start))
    return tuple(parts)


def daypart(local_hour: int, cfg: ContextConfig) -> str:
    """The daypart an hour of the local day falls in: the last one starting at or before it."""
    if isinstance(local_hour, bool) or not isinstance(local_hour, int) or not 0 <= local_hour <= 23:
        raise ValueError(f"local_hour must be a whole hour 0-23, got {local_hour!r}")
    return next(part.name for part in reversed(cfg.dayparts) if part.start_hour <= local_hour)


def session_phase(
    event_count: int,
    page_depth: int,
    product_views: int,
    cart_adds: int,
    checkout_started: bool,
    converted: bool,
    cfg: ContextConfig,
) -> str:
    """How far a session got: checkout, deep, browsing or entry (first match wins; thresholds in config)."""
    if cart_adds > 0 or checkout_started or converted:
        return "checkout"
    if page_depth >= cfg.deep_min_page_depth or product_views >= cfg.deep_min_product_views:
        return "deep"
    if event_count >= cfg.browsing_min_events:
        return "browsing"
    return "entry"


# --- user agents -------------------------------------------------------------------------------------

# Phone operating systems whose UAs uap-core may not give a device family for.
_MOBILE_OS = frozenset({"iOS", "Windows Phone", "BlackBerry OS", "KaiOS", "Symbian OS", "Firefox OS"})


def _label(family: str, major: str | None, minor: str | None = None) -> str:
    """'iOS', '17', '4' -> 'iOS 17.4'; a minor without a major is dropped."""
    if not major:
        return family
    return f"{family} {major}.{minor}" if minor else f"{family} {major}"


def _device_type(ua: str, device_family: str, brand: str, os_family: str | None) -> str | None:
    if device_family == "Spider":  # uap-core's family for crawlers, whatever device they pretend to be
        return "bot"
    if device_family.startswith("iPad") or "Kindle" in device_family or os_family == "Kindle":
        return "tablet"
    if brand == "Generic_Android_Tablet":
        return "tablet"
    if device_family.startswith(("iPhone", "iPod")) or brand == "Generic_Smartphone":
        return "mobile"
    if os_family == "Android":  # Google's rule: phone browsers say "Mobile", tablet browsers do not
        return "mobile" if "Mobile" in ua else "tablet"
    if os_family in _MOBILE_OS:
        return "mobile"
    return "desktop" if os_family else None


@functools.lru_cache(maxsize=_UA_CACHE_SIZE)
def parse_user_agent(ua: str | None) -> tuple[str | None, str | None, str | None]:
    """(device_type, os, browser) from a raw user agent, e.g. ("mobile", "iOS 17.4", "Mobile Safari 17").

    device_type is mobile, tablet, desktop or bot; None when the UA names no OS (curl, junk) or is empty.
    Cached: a site sees far fewer distinct UAs than events.
    """
    if ua is None or not ua.strip():
        return None, None, None
    result = ua_parser.parse(ua)
    os = result.os if result.os and result.os.family != "Other" else None
    agent = result.user_agent if result.user_agent and result.user_agent.family != "Other" else None
    device = result.device
    device_type = _device_type(
        ua,
        device.family if device else "",
        (device.brand or "") if device else "",
        os.family if os else None,
    )
    return (
        device_type,
        _label(os.family, os.major, os.minor) if os else None,
        _label(agent.family, agent.major) if agent else None,
    )


# --- Spark -------------------------------------------------------------------------------------------

_KEY_COLUMNS = ("_ctx_lat", "_ctx_lon", "_ctx_ip")
_TZ_SCHEMA = "_ctx_lat DOUBLE, _ctx_lon DOUBLE, _ctx_ip STRING, _ctx_tz STRING, _ctx_tz_source STRING"
_UA_SCHEMA = "_ctx_ua STRING, ua_device_type STRING, ua_os STRING, ua_browser STRING"

ArrowBatches = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def resolve_timezone_batches(ip_table: IpTimezones, zones: frozenset[str]) -> ArrowBatches:
    """A mapInArrow function: (_ctx_lat, _ctx_lon, _ctx_ip) batches -> the same plus _ctx_tz, _ctx_tz_source.

    Only for events without a usable zone of their own, so the event's zone is not an input.
    """
    names = [*_KEY_COLUMNS, "_ctx_tz", "_ctx_tz_source"]

    def resolve(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            keys = zip(*(batch.column(name).to_pylist() for name in _KEY_COLUMNS), strict=True)
            found = [resolve_timezone(None, *key, ip_table, zones) for key in keys]
            answers = [pa.array([row[i] for row in found], pa.string()) for i in range(2)]
            yield pa.RecordBatch.from_arrays([*(batch.column(n) for n in _KEY_COLUMNS), *answers], names=names)

    return resolve


def parse_user_agent_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """A mapInArrow function: _ctx_ua batches -> the same plus ua_device_type, ua_os, ua_browser."""
    names = ["_ctx_ua", "ua_device_type", "ua_os", "ua_browser"]
    for batch in batches:
        parsed = [parse_user_agent(ua) for ua in batch.column("_ctx_ua").to_pylist()]
        answers = [pa.array([row[i] for row in parsed], pa.string()) for i in range(3)]
        yield pa.RecordBatch.from_arrays([batch.column("_ctx_ua"), *answers], names=names)


def spark_zones(spark: SparkSession) -> frozenset[str]:
    """The zones both Python and Spark's JVM know.

    The JVM's tz data can be older than timezonefinder's or the OS's (JDK 17.0.15 lacks
    America/Coyhaique), and from_utc_timestamp fails the whole batch on a zone it does not know.
    """
    try:  # one round trip: iterating the Java set from Python would cost one per zone
        jvm: Any = spark.sparkContext._jvm
        joined = jvm.java.lang.String.join(",", jvm.java.time.ZoneId.getAvailableZoneIds())
    except Exception:  # Spark Connect has no JVM handle: trust Python's zones
        return iana_zones()
    return iana_zones() & frozenset(str(joined).split(","))


def _positions_zones(keyed: DataFrame, ip_table: IpTimezones, zones: frozenset[str]) -> DataFrame:
    """Distinct (lat, lon, ip) of events without a usable zone of their own -> the zone found for them."""
    return (
        keyed.filter(F.col("_ctx_event_tz").isNull())
        .select(*_KEY_COLUMNS)
        .distinct()
        .mapInArrow(resolve_timezone_batches(ip_table, zones), _TZ_SCHEMA)
        .filter(F.col("_ctx_tz").isNotNull())
        .withColumnsRenamed({name: f"_found{name}" for name in _KEY_COLUMNS})
    )


def _agents(keyed: DataFrame) -> DataFrame:
    """Distinct non-blank user agents -> device type, OS and browser."""
    return (
        keyed.select(F.col("_ctx_ua_key").alias("_ctx_ua"))
        .filter(F.length(F.trim("_ctx_ua")) > 0)
        .distinct()
        .mapInArrow(parse_user_agent_batches, _UA_SCHEMA)
    )


def add_context(events: DataFrame, cfg: ContextConfig, ip_table: IpTimezones) -> DataFrame:
    """Canonical events (bronze.events layout) plus tz, tz_source, local_time, local_hour, local_weekday,
    daypart, ua_device_type, ua_os and ua_browser; other columns pass through.

    An event's own zone is checked in SQL; Python runs once per distinct position/IP of the events
    without one, and once per distinct user agent, and both answers are broadcast back. Needs the session
    time zone to be UTC (build_spark sets it): the wall-clock time is read off a UTC-rendered timestamp.
    """
    spark = events.sparkSession
    session_zone = spark.conf.get("spark.sql.session.timeZone")
    if session_zone not in _UTC_SESSION_ZONES:
        raise ValueError(f"add_context needs spark.sql.session.timeZone=UTC (build_spark sets it), got "
                         f"{session_zone!r}: local times would be off by its UTC offset")  # fmt: skip
    zones = spark_zones(spark)
    keyed = events.withColumns(
        {
            "_ctx_event_tz": F.when(F.col("context.timezone").isin(*sorted(zones)), F.col("context.timezone")),
            "_ctx_lat": F.col("context.geo.lat").cast("double"),  # the types _TZ_SCHEMA passes them back as
            "_ctx_lon": F.col("context.geo.lon").cast("double"),
            "_ctx_ip": F.col("context.ip").cast("string"),
            "_ctx_ua_key": F.col("device.user_agent"),
        }
    )
    positions, agents = _positions_zones(keyed, ip_table, zones), _agents(keyed)
    same_position = [F.col(name).eqNullSafe(F.col(f"_found{name}")) for name in _KEY_COLUMNS]
    has_own_zone = F.col("_ctx_event_tz").isNotNull()
    local_time = F.from_utc_timestamp("occurred_at", F.col("tz")).cast("timestamp_ntz")  # null when tz is null
    return (
        keyed.join(F.broadcast(positions), functools.reduce(Column.__and__, same_position, ~has_own_zone), "left")
        .join(F.broadcast(agents), F.col("_ctx_ua_key") == F.col("_ctx_ua"), "left")
        .withColumn("tz", F.coalesce("_ctx_event_tz", "_ctx_tz"))
        .withColumn("tz_source", F.when(has_own_zone, F.lit("event")).otherwise(F.col("_ctx_tz_source")))
        .withColumn("local_time", local_time)
        .withColumn("local_hour", F.hour("local_time"))
        .withColumn("local_weekday", F.weekday("local_time") + 1)  # ISO: 1 = Monday ... 7 = Sunday
        .withColumn("daypart", cfg.daypart_column(F.col("local_hour")))
        .select(*events.columns, *CONTEXT_COLUMNS)
    )
