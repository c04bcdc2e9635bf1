"""The simulator is reproducible, and its ground truth agrees with what it wrote."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from datetime import datetime
from itertools import pairwise

import pytest

from spark_jobs.bronze.normalize import RejectedEvent, normalize_line
from spark_jobs.simulate import MAX_IN_SESSION_GAP_S, MIN_SESSION_SEPARATION_S, PERSONAS, simulate

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    summary = simulate(root / "landing", root / "truth", events=4000, seed=11, duplicate_rate=0.05,
                       malformed_rate=0.02, late_rate=0.05, lines_per_file=700)  # fmt: skip
    return root, summary


def _lines(root):
    return [line for f in sorted((root / "landing").glob("*.ndjson")) for line in f.read_text().splitlines()]


def test_same_seed_writes_identical_files(tmp_path, day):
    root, _ = day
    simulate(tmp_path / "landing", tmp_path / "truth", events=4000, seed=11, duplicate_rate=0.05,
             malformed_rate=0.02, late_rate=0.05, lines_per_file=700)  # fmt: skip
    assert _lines(tmp_path) == _lines(root)
    assert (tmp_path / "truth" / "sessions.csv").read_text() == (root / "truth" / "sessions.csv").read_text()


def test_every_line_is_an_event_a_duplicate_or_an_injected_malformed_line(day):
    root, summary = day
    lines = _lines(root)
    assert len(lines) == summary.lines == summary.events + summary.duplicates + summary.malformed
    reasons, accepted = Counter(), Counter()
    for line in lines:
        try:
            accepted[normalize_line(line)["event_id"]] += 1
        except RejectedEvent as exc:
            reasons[exc.reason.value] += 1
    assert dict(reasons) == summary.malformed_by_reason
    assert len(accepted) == summary.events
    assert sum(accepted.values()) - len(accepted) == summary.duplicates


def test_true_sessions_are_separated_by_more_than_the_timeout_and_dense_inside(day):
    root, _ = day
    with open(root / "truth" / "events.csv") as fh:
        session_of = {row["event_id"]: row["true_session_id"] for row in csv.DictReader(fh)}
    times = defaultdict(list)
    for line in set(_lines(root)):
        try:
            event = normalize_line(line)
        except RejectedEvent:
            continue
        times[session_of[event["event_id"]]].append(datetime.fromisoformat(event["occurred_at"]))
    for stamps in times.values():
        stamps.sort()
        assert all((b - a).total_seconds() <= MAX_IN_SESSION_GAP_S + 120 for a, b in pairwise(stamps))
    with open(root / "truth" / "sessions.csv") as fh:
        by_device = defaultdict(list)
        for row in csv.DictReader(fh):
            by_device[row["anonymous_id"]].append((row["start"], row["end"]))
    for spans in by_device.values():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            gap = datetime.fromisoformat(start) - datetime.fromisoformat(end)
            assert gap.total_seconds() >= MIN_SESSION_SEPARATION_S


def test_personas_formats_and_conversions_all_appear(day):
    root, summary = day
    with open(root / "truth" / "users.csv") as fh:
        users = list(csv.DictReader(fh))
    assert {u["persona"] for u in users} == set(PERSONAS)
    assert {u["source_kind"] for u in users} == {"segment", "web_sdk"}
    assert summary.conversions > 0
    assert json.loads((root / "truth" / "summary.json").read_text())["events"] == summary.events


def test_the_realistic_mix_speaks_like_real_sources_and_bronze_accepts_all_of_it(tmp_path):
    """realistic=True (make demo): Snowplow self-describing events with contexts, server-side track calls
    without a page, devices sharing client session ids, custom events; every event passes the contract."""
    summary = simulate(tmp_path / "landing", tmp_path / "truth", events=3000, seed=5, malformed_rate=0.0,
                       duplicate_rate=0.0, realistic=True)  # fmt: skip
    events = [normalize_line(line) for line in _lines(tmp_path)]
    assert len(events) == summary.events
    kinds = Counter(e["source"]["kind"] for e in events)
    assert {"snowplow", "segment", "web_sdk"} <= set(kinds)
    snowplow = [e for e in events if e["source"]["kind"] == "snowplow"]
    assert {"click", "search", "product_view", "scroll"} <= {e["event_type"] for e in snowplow}
    assert all(e["properties"].get("page_view_id") for e in snowplow if e["event_type"] == "scroll")
    server = [e for e in events if e["source"]["sdk"] == "analytics-python"]
    assert server and all(e["page"]["path"] is None and e["anonymous_id"].startswith("uid:") for e in server)
    custom = Counter(e["event_name"] for e in events if e["event_type"] == "custom")
    assert custom["Coupon Applied"] > 0 and custom["Page Rendered"] > 0
    with open(tmp_path / "truth" / "sessions.csv") as fh:
        by_client = defaultdict(set)
        for row in csv.DictReader(fh):
            by_client[row["client_session_id"]].add(row["anonymous_id"])
    assert any(len(devices) > 1 for sid, devices in by_client.items() if sid)  # "1" on several devices
