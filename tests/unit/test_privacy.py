"""Keyed hashes and coarse IPs: Python and Spark give the same values, the key is a kept secret."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import random
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from spark_jobs import privacy
from spark_jobs.privacy import hash_key, key_file, keyed_hash, truncate_ip
from spark_jobs.settings import Settings, SettingsError

KEY = b"k" * 40
TEXTS = [
    "",
    "a",
    "ann@example.com",
    "user_id:u-123",
    "Ünïcödé ✓ 名前 🙂",
    "line\nbreak\ttab",
    "x" * 1000,
    hashlib.sha256(b"ann@example.com").hexdigest(),
]
KEYS = [b"short key", b"k" * 64, b"k" * 65, bytes(range(256)), "ключ-секрет".encode() * 4]


@pytest.mark.unit
def test_keyed_hash_is_hmac_sha256_and_not_the_bare_hash():
    for text in TEXTS:
        assert keyed_hash(text, KEY) == hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()
        assert keyed_hash(text, KEY) != hashlib.sha256(text.encode()).hexdigest()
    assert keyed_hash("ann@example.com", KEY) != keyed_hash("ann@example.com", b"another key")


@pytest.mark.spark
def test_spark_computes_the_same_keyed_hash_as_python(spark):
    rng = random.Random(7)
    texts = [*TEXTS, *("".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 90))) for _ in range(200))]
    frame = spark.createDataFrame([(i, t) for i, t in enumerate(texts)] + [(len(texts), None)], "i INT, t STRING")
    hashed = frame.select("i", *(privacy.keyed_hash_column(frame.t, key).alias(f"k{n}") for n, key in enumerate(KEYS)))
    got = {r.i: tuple(r)[1:] for r in hashed.collect()}
    assert got == {
        **{
            i: tuple(hmac.new(key, t.encode(), hashlib.sha256).hexdigest() for key in KEYS) for i, t in enumerate(texts)
        },
        len(texts): (None,) * len(KEYS),
    }


@pytest.fixture
def unkeyed(tmp_path) -> Settings:
    """Settings without INTENTLAKE_HASH_KEY, on a fresh lakehouse."""
    return replace(Settings.from_env().with_root(tmp_path / "lh"), hash_key="")


@pytest.mark.unit
def test_without_a_key_one_is_generated_once_private_and_reused(unkeyed, caplog):
    with caplog.at_level(logging.WARNING, logger="spark_jobs.privacy"):
        first = hash_key(unkeyed)
        assert hash_key(unkeyed) == first  # reused, not regenerated
    path = key_file(unkeyed)
    assert path == unkeyed.lakehouse / "_secrets" / "hash_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(first) >= 32 and list(path.parent.iterdir()) == [path]  # no temporary file left behind
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "set INTENTLAKE_HASH_KEY" in warnings[0]  # said once
    assert first.decode() not in warnings[0]  # the key itself is never logged


@pytest.mark.unit
def test_processes_racing_to_create_the_key_all_get_the_same_one(unkeyed):
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: privacy._read_or_create(key_file(unkeyed)), range(32)))
    assert len(keys) == 1


@pytest.mark.unit
def test_the_key_from_the_environment_wins_and_stays_out_of_repr_and_errors(monkeypatch, tmp_path):
    secret = "s3cr3t-" + "x" * 40
    monkeypatch.setenv("INTENTLAKE_LAKEHOUSE", str(tmp_path / "lh"))
    monkeypatch.setenv("INTENTLAKE_HASH_KEY", secret)
    settings = Settings.from_env()
    assert hash_key(settings) == secret.encode() and not key_file(settings).exists()
    assert secret not in repr(settings)
    monkeypatch.setenv("INTENTLAKE_HASH_KEY", "tooshort-s3cr3t")
    with pytest.raises(SettingsError, match="INTENTLAKE_HASH_KEY has 15 characters: use at least 32") as caught:
        Settings.from_env()
    assert "tooshort" not in str(caught.value)


@pytest.mark.unit
def test_the_ip_retention_is_thirty_days_unless_set_and_never_negative(monkeypatch):
    assert Settings.from_env().ip_retention_days == 30
    monkeypatch.setenv("INTENTLAKE_IP_RETENTION_DAYS", "-1")
    with pytest.raises(SettingsError, match="INTENTLAKE_IP_RETENTION_DAYS=-1: use 0 or more days"):
        Settings.from_env()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("ip", "truncated"),
    [
        ("203.0.113.7", "203.0.113.0"),
        (" 198.51.100.255 ", "198.51.100.0"),
        ("203.0.113.0", "203.0.113.0"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1::"),
        ("2001:0DB8:0000:0000::1", "2001:db8::"),
        ("2001:db8::", "2001:db8::"),
        ("0:5:0::1", "0:5::"),
        ("::1", "::"),
        ("::ffff:198.51.100.7", "::ffff:198.51.100.0"),
        ("::ffff:c633:6407", "::ffff:198.51.100.0"),
        ("64:ff9b::192.0.2.33", "64:ff9b::"),
        ("fe80::1%eth0", None),
        ("256.1.1.1", None),
        ("01.2.3.4", None),
        ("1:2:3:4:5:6:7:8:9", None),
        ("1::2::3", None),
        ("secret@example.com", None),
        ("", None),
        (None, None),
    ],
)
def test_ips_are_cut_to_their_network(ip, truncated):
    assert truncate_ip(ip) == truncated


def _addresses(n: int) -> list[str]:
    """Random IPv4 and IPv6 addresses in many spellings (compressed, exploded, upper case, mapped)."""
    rng = random.Random(11)
    out: list[str] = []
    for _ in range(n):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        groups = [0 if rng.random() < 0.4 else rng.getrandbits(16) for _ in range(8)]  # zero runs: '::' spellings
        v6 = ipaddress.IPv6Address(sum(g << (16 * (7 - i)) for i, g in enumerate(groups)))
        out += [
            str(v4),
            str(v6),
            v6.exploded,
            str(v6).upper(),
            f"::ffff:{v4}",
            str(ipaddress.IPv6Address(f"::ffff:{v4}")),
        ]
    return out


@pytest.mark.spark
def test_spark_cuts_every_address_as_python_does_and_a_second_cut_changes_nothing(spark):
    from pyspark.sql import functions as F

    from spark_jobs.privacy import is_truncated_ip_column, truncate_ip_column

    garbage = ["", " ", "1.2.3", "1.2.3.4.5", "1.2.3.04", "::ffff:1.2.3.256", ":::", "1:::2", ":1:2:3:4:5:6:7",
               "1:2:3:4:5:6:7:8::", "12345::", "g::1", "1.2.3.4:80", "[::1]", "tok_123", "::1.2.3.4:5"]  # fmt: skip
    ips = [*_addresses(300), *garbage, "::", "0:0:0::", "2001:db8:0::"]
    frame = spark.createDataFrame([(ip,) for ip in ips] + [(None,)], "ip STRING")
    cut = frame.select("ip", truncate_ip_column(F.col("ip")).alias("cut"))
    again, done = truncate_ip_column(F.col("cut")).alias("again"), is_truncated_ip_column(F.col("cut")).alias("done")
    twice = cut.select("ip", "cut", again, done)
    rows = twice.collect()
    assert {r.ip: r.cut for r in rows} == {ip: truncate_ip(ip) for ip in [*ips, None]}
    assert all(r.again == r.cut and r.done for r in rows)  # idempotent: a cut address is left as it is


@pytest.mark.unit
def test_a_cut_address_still_finds_its_time_zone():
    from spark_jobs.settings import REPO_ROOT
    from spark_jobs.silver.context import IpTimezones

    table = IpTimezones.load(REPO_ROOT / "config" / "ip_timezones.csv")
    for ip in ["192.0.2.77", "198.51.100.7", "198.51.7.9", "203.0.113.250", "2001:db8:ab:cd::1", "::ffff:203.0.113.9"]:
        assert table.lookup(truncate_ip(ip)) == table.lookup(ip) is not None


@pytest.mark.spark
def test_an_erasure_request_keeps_its_subject_only_as_a_keyed_hash(spark, settings):
    from datetime import UTC, datetime

    from spark_jobs import erasure
    from tests.helpers import table

    request = erasure.file_request(spark, settings, "user_id", "u-42", datetime(2026, 11, 2, tzinfo=UTC))
    assert erasure.file_request(spark, settings, "user_id", "u-42", datetime(2026, 11, 3, tzinfo=UTC)) == request
    stored = table(spark, settings, "ops.erasure_requests").where(f"request_id = '{request}'").first().subject_hash
    assert (
        stored
        == keyed_hash("user_id:u-42", hash_key(settings))
        == erasure.subject_hash("user_id", "u-42", hash_key(settings))
    )
    assert stored != hashlib.sha256(b"user_id:u-42").hexdigest()
