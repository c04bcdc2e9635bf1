"""Personal data kept the way a privacy reviewer expects: keyed hashes.

Keyed hashes. An identifier derived from personal data (an email address, an erasure subject) is stored as
HMAC-SHA256 under a secret key, never as a bare sha256: anyone holding an address can recompute a bare hash
and look the person up; without the key nobody can. `keyed_hash` (Python's hmac) and `keyed_hash_column`
(Spark's own sha2/unhex/concat, no Python UDF) give the same lower-case hex digest for the same text.

The key is INTENTLAKE_HASH_KEY (its UTF-8 bytes; at least 32 characters, e.g. `openssl rand -hex 32`).
Unset, `hash_key` generates a random one once into `<lakehouse>/_secrets/hash_key` (mode 0600) and reuses
it, so `make demo` works out of the box, and says once that production should set the variable. Keep the
key: a different key gives every keyed identifier a different value, so email links and erasure receipts
made under the old key no longer match new events or requests.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

from pyspark.sql import Column
from pyspark.sql import functions as F

from spark_jobs.settings import MIN_HASH_KEY_CHARS, Settings, SettingsError

log = logging.getLogger(__name__)

__all__ = [
    "PLAN_REDACTION",
    "hash_key",
    "key_file",
    "keyed_hash",
    "keyed_hash_column",
]

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
