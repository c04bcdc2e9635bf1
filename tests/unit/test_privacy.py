"""Keyed hashes: Python and Spark give the same values, the key is a kept secret."""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from spark_jobs import privacy
from spark_jobs.privacy import hash_key, key_file, keyed_hash
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
