"""Landing-zone file names: what bronze reads, and every other file reported (listed and logged once)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from spark_jobs.bronze.landing import LANDING_GLOB, LANDING_SUFFIXES, is_landing_file, unread_files, warn_unread_files

pytestmark = pytest.mark.unit


def _touch(landing: Path, *names: str) -> None:
    for name in names:
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_text("{}\n")


def test_the_six_newline_delimited_json_forms_are_read_and_nothing_else():
    read = ["a.ndjson", "a.jsonl", "a.json", "a.ndjson.gz", "a.jsonl.gz", "a.json.gz"]
    assert [n for n in read if is_landing_file(n)] == read
    unread = ["a.csv", "a.txt", "a.parquet", "a.gz", "a.json.bz2", "a.JSON", "a.ndjson.tmp", "ndjson"]
    assert [n for n in unread if is_landing_file(n)] == []
    assert LANDING_GLOB == "*.{ndjson,jsonl,json,ndjson.gz,jsonl.gz,json.gz}"
    assert len(LANDING_SUFFIXES) == 6


def test_unread_files_lists_other_files_and_subfolders_but_not_hidden_ones(tmp_path):
    landing = tmp_path / "landing"
    _touch(landing, "events.ndjson", "events.jsonl.gz", "events.json",  # read
           "notes.txt", "events.csv", "data.parquet", "2026-12/events.ndjson",  # never read
           ".events.ndjson.tmp", "_tmp/part.csv", "_spark_metadata/0", ".hidden/x.csv",  # in progress or metadata
           "late.ndjson._COPYING_")  # fmt: skip
    assert unread_files(landing) == [Path("2026-12/events.ndjson"), Path("data.parquet"), Path("events.csv"),
                                     Path("notes.txt")]  # fmt: skip


def test_a_missing_or_clean_landing_zone_has_no_unread_files(tmp_path):
    assert unread_files(tmp_path / "nowhere") == []
    _touch(tmp_path, "a.ndjson", "b.json.gz")
    assert unread_files(tmp_path) == []


def test_each_unread_file_is_logged_once_naming_it_and_the_accepted_suffixes(tmp_path, caplog):
    landing = tmp_path / "landing"
    _touch(landing, "events.csv", "ok.ndjson")
    with caplog.at_level(logging.WARNING, logger="spark_jobs.bronze.landing"):
        assert warn_unread_files(landing) == [Path("events.csv")]
        assert warn_unread_files(landing) == []  # the next batch or run of the same process stays quiet
        _touch(landing, "notes.txt")
        assert warn_unread_files(landing) == [Path("notes.txt")]  # a new stray file is named when it appears
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert str(landing / "events.csv") in messages[0]
    assert ".ndjson, .jsonl, .json, .ndjson.gz, .jsonl.gz, .json.gz" in messages[0]
