"""Personal data kept the way a privacy reviewer expects: keyed hashes, and IP addresses cut to their network.

Keyed hashes. An identifier derived from personal data (an email address, an erasure subject) is stored as
HMAC-SHA256 under a secret key, never as a bare sha256: anyone holding an address can recompute a bare hash
and look the person up; without the key nobody can. `keyed_hash` (Python's hmac) and `keyed_hash_column`
(Spark's own sha2/unhex/concat, no Python UDF) give the same lower-case hex digest for the same text.

The key is INTENTLAKE_HASH_KEY (its UTF-8 bytes; at least 32 characters, e.g. `openssl rand -hex 32`).
Unset, `hash_key` generates a random one once into `<lakehouse>/_secrets/hash_key` (mode 0600) and reuses
it, so `make demo` works out of the box, and says once that production should set the variable. Keep the
key: a different key gives every keyed identifier a different value, so email links and erasure receipts
made under the old key no longer match new events or requests.

Coarse IPs. `truncate_ip` (Python's ipaddress) and `truncate_ip_column` (Spark, no UDF) cut an address to
its network: IPv4 to /24, IPv6 to /48, an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as IPv4. That keeps the
coarse geography the IP time-zone lookup needs (spark_jobs/silver/context.py) and drops the host. Text that
is not an IP address becomes null. Truncating a truncated address changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import threading
from collections.abc import Callable
from functools import reduce
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from spark_jobs.settings import MIN_HASH_KEY_CHARS, Settings, SettingsError

log = logging.getLogger(__name__)

__all__ = [
    "IPV4_PREFIX",
    "IPV6_PREFIX",
    "PLAN_REDACTION",
    "hash_key",
    "is_truncated_ip_column",
    "key_file",
    "keyed_hash",
    "keyed_hash_column",
    "truncate_ip",
    "truncate_ip_column",
]

IPV4_PREFIX = 24
IPV6_PREFIX = 48
_BLOCK = 64  # SHA-256's block size in bytes (RFC 2104: the key is padded, or hashed first, to this)
# spark.sql.redaction.string.regex that shows the padded keys of `keyed_hash_column` (64-byte binary
# literals) as "*********(redacted)" in explain output and the Spark UI
PLAN_REDACTION = r"(?i)0x[0-9a-f]{128}"


# ----------------------------------------------------------------------------------------------- keyed hashes


def keyed_hash(value: str, key: bytes) -> str:
    """HMAC-SHA256 of the text's UTF-8 bytes under `key`, as 64 lower-case hex digits."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def keyed_hash_column(col: Column, key: bytes) -> Column:
    """Spark twin of `keyed_hash` (null stays null): H((K ^ opad) || H((K ^ ipad) || m)), RFC 2104.

    The padded key is a literal of the query plan, so plan text (explain, the Spark UI) holds key material
    unless the session sets spark.sql.redaction.string.regex to PLAN_REDACTION: keep INTENTLAKE_SPARK_UI off,
    or the UI private, in production.
    """
    block = hashlib.sha256(key).digest() if len(key) > _BLOCK else key
    block = block.ljust(_BLOCK, b"\0")
    inner_key = bytes(b ^ 0x36 for b in block)
    outer_key = bytes(b ^ 0x5C for b in block)
    message = F.encode(col.cast("string"), "UTF-8")
    inner = F.unhex(F.sha2(F.concat(F.lit(inner_key), message), 256))
    return F.sha2(F.concat(F.lit(outer_key), inner), 256)


def key_file(settings: Settings) -> Path:
    """Where the generated key lives when INTENTLAKE_HASH_KEY is unset: <lakehouse>/_secrets/hash_key."""
    return settings.lakehouse / "_secrets" / "hash_key"


_lock = threading.Lock()
_announced: set[Path] = set()


def hash_key(settings: Settings) -> bytes:
    """The key of every keyed hash: INTENTLAKE_HASH_KEY, else the generated one in `key_file` (made once)."""
    if settings.hash_key:
        return settings.hash_key.encode("utf-8")
    path = key_file(settings)
    with _lock:
        key = _read_or_create(path)
        if path not in _announced:
            _announced.add(path)
            log.warning(
                "INTENTLAKE_HASH_KEY is not set: keyed hashes use the key generated in %s. In production set "
                "INTENTLAKE_HASH_KEY from a secret store (at least %d characters) and keep it.",
                path,
                MIN_HASH_KEY_CHARS,
            )
    return key


def configured_or_generated(configured: str, path: Path) -> tuple[str, ...]:
    """The comma-separated secrets of a setting, else the one generated into `path` (API and write keys)."""
    keys = tuple(k.strip() for k in configured.split(",") if k.strip())
    return keys or (generated_secret(path),)


def generated_secret(path: Path) -> str:
    """A random secret kept in `path` (0600), made once by whoever asks first (e.g. the decision API's key)."""
    return _read_or_create(path).decode("utf-8")


def _read_or_create(path: Path) -> bytes:
    """The key in `path`; when there is none, a random one written atomically (0600) by whoever gets there first."""
    if path.exists():
        return _read(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))  # 256 random bits, as text like INTENTLAKE_HASH_KEY
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, path)  # atomic, and never replaces a key another process wrote first
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> bytes:
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_HASH_KEY_CHARS:
        raise SettingsError(
            f"{path}: the hash key there is shorter than {MIN_HASH_KEY_CHARS} characters; set INTENTLAKE_HASH_KEY, "
            "or delete the file to generate a new one (every keyed identifier then changes)"
        )
    return key.encode("utf-8")


# ------------------------------------------------------------------------------------------------ coarse IPs


def truncate_ip(ip: str | None) -> str | None:
    """'203.0.113.7' -> '203.0.113.0', '2001:db8:1:2::7' -> '2001:db8:1::'; null for text that is no IP address."""
    if ip is None or "%" in ip:  # a zone id (fe80::1%eth0) names an interface, not a place
        return None
    try:
        address = ipaddress.ip_address(ip.strip(" "))  # spaces only, as Spark's trim
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{_network(address.ipv4_mapped, IPV4_PREFIX)}"
    return str(_network(address, IPV4_PREFIX if address.version == 4 else IPV6_PREFIX))


def _network(address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int) -> object:
    return ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address


_OCTET = r"(0|[1-9][0-9]{0,2})"
_IPV4 = rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}"
_V4_PATTERN = f"^{_IPV4}$"
_TAIL_PATTERN = f"^(.*:){_IPV4}$"  # an IPv6 address ending in dotted IPv4 (::ffff:192.0.2.1)


def _let(value: Column, body: Callable[[Column], Column]) -> Column:
    """body(value) with `value` evaluated once (a one-element transform binds it to a lambda variable), so
    the expression tree stays small however often the body uses it."""
    return F.transform(F.array(value), body)[0]


def truncate_ip_column(ip: Column) -> Column:
    """Spark twin of `truncate_ip`: the same text for every address (null for anything else)."""
    return _let(F.lower(F.trim(ip.cast("string"))), _truncate_text)


def _octets(text: Column, pattern: str, first_group: int) -> list[Column]:
    """The four decimal octets `pattern` captures from group `first_group` on (null where it does not match)."""
    return [F.regexp_extract(text, pattern, first_group + i).try_cast("int") for i in range(4)]


def _are_bytes(octets: list[Column]) -> Column:
    return reduce(lambda valid, octet: valid & (octet <= 255), octets, F.lit(True))


def _hex(value: Column) -> Column:
    return F.lower(F.hex(value))


def _truncate_text(text: Column) -> Column:
    v4 = _octets(text, _V4_PATTERN, 1)
    return F.when(text.rlike(_V4_PATTERN) & _are_bytes(v4), F.concat_ws(".", *v4[:3], F.lit("0"))).otherwise(
        _let(_ipv6_groups(text), _truncate_v6)
    )


def _ipv6_groups(text: Column) -> Column:
    """IPv6 text -> its eight 16-bit groups as integers (array<int>), or null when it is not IPv6."""
    tail = _octets(text, _TAIL_PATTERN, 2)
    has_tail = text.rlike(_TAIL_PATTERN)
    as_hex = F.concat(  # the dotted tail as the two hex groups it stands for
        F.regexp_extract(text, _TAIL_PATTERN, 1),
        _hex(tail[0] * 256 + tail[1]),
        F.lit(":"),
        _hex(tail[2] * 256 + tail[3]),
    )
    hex_text = F.when(has_tail & _are_bytes(tail), as_hex).when(~has_tail & text.contains(":"), text)
    return _let(hex_text, _hex_groups)


def _hex_groups(text: Column) -> Column:
    halves = F.split(text, "::")  # at most one '::', standing for one or more zero groups

    def groups_of(part: Column) -> Column:
        return F.when(part == "", F.array().cast("array<string>")).otherwise(F.split(part, ":"))

    left, right = groups_of(halves[0]), groups_of(F.get(halves, 1))
    zeros = 8 - F.size(left) - F.size(right)
    whole = F.split(text, ":")
    groups = F.when((F.size(halves) == 1) & (F.size(whole) == 8), whole).when(
        (F.size(halves) == 2) & (zeros >= 1), F.concat(left, F.array_repeat(F.lit("0"), zeros), right)
    )
    return _let(
        groups,
        lambda g: F.when(
            F.forall(g, lambda group: group.rlike("^[0-9a-f]{1,4}$")),
            F.transform(g, lambda group: F.conv(group, 16, 10).try_cast("int")),
        ),
    )


def _truncate_v6(groups: Column) -> Column:
    """Eight groups -> the /48 network as RFC 5952 text ('2001:db8:1::'), or ::ffff:a.b.c.0 for mapped IPv4."""
    g = [groups[i] for i in range(8)]
    is_mapped = (g[0] + g[1] + g[2] + g[3] + g[4] == 0) & (g[5] == 0xFFFF)
    mapped = F.concat(
        F.lit("::ffff:"),
        F.concat_ws(".", F.shiftright(g[6], 8), g[6].bitwiseAND(255), F.shiftright(g[7], 8), F.lit("0")),
    )
    first = [_hex(g[i]) for i in range(3)]  # a /48 keeps three groups; trailing zero groups fold into '::'
    network = (
        F.when(g[2] != 0, F.concat_ws(":", *first, F.lit(":")))
        .when(g[1] != 0, F.concat_ws(":", first[0], first[1], F.lit(":")))
        .when(g[0] != 0, F.concat(first[0], F.lit("::")))
        .otherwise(F.lit("::"))
    )
    return F.when(groups.isNull(), F.lit(None).cast("string")).when(is_mapped, mapped).otherwise(network)


def is_truncated_ip_column(ip: Column) -> Column:
    """Whether an IP needs no truncation: null, or already the text `truncate_ip_column` makes of it."""
    return ip.isNull() | ip.eqNullSafe(truncate_ip_column(ip))
