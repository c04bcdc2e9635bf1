"""Event context rules: time zone sources and their order, the IP table, dayparts, session phase and user
agents (pure Python, the shipped config files)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from spark_jobs.config import InvalidConfigError
from spark_jobs.settings import REPO_ROOT
from spark_jobs.silver.context import (
    ContextConfig,
    IpTimezones,
    daypart,
    parse_user_agent,
    parse_user_agent_batches,
    resolve_timezone,
    resolve_timezone_batches,
    session_phase,
)

pytestmark = pytest.mark.unit

CFG = ContextConfig.load(REPO_ROOT / "config" / "context.yaml")
IPS = IpTimezones.load(REPO_ROOT / "config" / "ip_timezones.csv")
TOKYO = (35.68, 139.69)
BERLIN = (52.52, 13.40)

UA = {
    "iphone_safari": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "android_chrome_mobile": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "ipad": "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 "
    "Mobile/15E148 Safari/604.1",
    "android_tablet": "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Safari/537.36",
    "windows_chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "macos_firefox": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.4; rv:125.0) Gecko/20100101 Firefox/125.0",
    "googlebot": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "kindle_fire": "Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) AppleWebKit/537.36 (KHTML, "
    "like Gecko) Silk/3.68 like Chrome/39.0.2171.93 Safari/537.36",
}


# --- time zones ---------------------------------------------------------------------------------------


def test_the_events_own_valid_zone_wins_over_position_and_ip():
    assert resolve_timezone("Europe/Berlin", *TOKYO, "198.51.100.7", IPS) == ("Europe/Berlin", "event")


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "europe/berlin", "Europe/Berlin ", "", "CET+1", "localtime"])
def test_an_invalid_event_zone_falls_through_to_the_position(bad):
    assert resolve_timezone(bad, *TOKYO, "198.51.100.7", IPS) == ("Asia/Tokyo", "geo")


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(None, None), (35.68, None), (95.0, 10.0), (10.0, 181.0), (float("nan"), 10.0)],
    ids=["missing", "half-missing", "lat-out-of-range", "lon-out-of-range", "nan"],
)
def test_without_a_usable_position_the_ip_decides(lat, lon):
    assert resolve_timezone(None, lat, lon, "203.0.113.50", IPS) == ("Asia/Tokyo", "ip")


def test_an_open_sea_position_still_gets_its_nautical_zone():
    assert resolve_timezone(None, 40.0, -30.0, "203.0.113.50", IPS) == ("Etc/GMT+2", "geo")


@pytest.mark.parametrize("ip", [None, "", "10.1.2.3", "not-an-ip", "2001:db9::1"])
def test_nothing_usable_resolves_to_no_zone(ip):
    assert resolve_timezone(None, None, None, ip, IPS) == (None, None)


def test_a_zone_outside_the_allowed_set_falls_through():
    """add_context passes the zones Spark's JVM knows; a newer one must fall through, not fail the batch."""
    only_tokyo = frozenset({"Asia/Tokyo"})
    assert resolve_timezone("Europe/Berlin", *BERLIN, "203.0.113.1", IPS, zones=only_tokyo) == ("Asia/Tokyo", "ip")
    assert resolve_timezone(None, *BERLIN, None, IPS, zones=only_tokyo) == (None, None)


@pytest.mark.parametrize(
    ("ip", "zone"),
    [
        ("198.51.100.7", "America/Los_Angeles"),  # in the /24 and the /16: the /24 wins
        ("198.51.7.1", "America/New_York"),  # only in the /16
        ("192.0.2.255", "Europe/London"),
        ("203.0.113.0", "Asia/Tokyo"),
        ("2001:db8:abcd::1", "Europe/Berlin"),
        ("::ffff:192.0.2.9", "Europe/London"),  # IPv4-mapped IPv6, as a dual-stack server logs it
        (" 203.0.113.9 ", "Asia/Tokyo"),
        ("198.52.0.1", None),
    ],
)
def test_the_ip_table_matches_the_longest_prefix(ip, zone):
    assert IPS.lookup(ip) == zone


def test_the_most_specific_network_wins_whatever_the_order_of_lines(tmp_path):
    path = tmp_path / "ips.csv"
    path.write_text("cidr,timezone\n10.1.2.0/24,Asia/Tokyo\n10.0.0.0/8,Europe/Paris\n10.1.0.0/16,Europe/Rome\n")
    table = IpTimezones.load(path)
    assert [table.lookup(ip) for ip in ("10.1.2.3", "10.1.9.9", "10.9.9.9")] == [
        "Asia/Tokyo",
        "Europe/Rome",
        "Europe/Paris",
    ]
    assert repr(table) == "IpTimezones(3 networks)"


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("192.0.2.0/33,Europe/London", "'192.0.2.0/33'"),
        ("192.0.2.7/24,Europe/London", "'192.0.2.7/24'"),  # host bits set: almost always a typo
        ("192.0.2.0/24,Europe/Londn", "'Europe/Londn'"),
        ("192.0.2.0/24", "'192.0.2.0/24' has 1 field(s)"),
        ("203.0.113.0/24,Asia/Tokyo", "already listed on line 4"),
    ],
    ids=["bad-prefix", "host-bits", "bad-zone", "missing-column", "duplicate"],
)
def test_a_bad_ip_table_line_names_the_file_the_line_and_the_value(tmp_path, line, named):
    path = tmp_path / "ip_timezones.csv"
    path.write_text(f"# operator export\n\ncidr,timezone\n203.0.113.0/24,Asia/Tokyo\n{line}\n")
    with pytest.raises(InvalidConfigError) as caught:
        IpTimezones.load(path)
    assert str(path) in str(caught.value) and "line 5" in str(caught.value) and named in str(caught.value)


def test_an_ip_table_without_its_header_is_rejected(tmp_path):
    path = tmp_path / "ip_timezones.csv"
    path.write_text("# no header\n203.0.113.0/24,Asia/Tokyo\n")
    with pytest.raises(InvalidConfigError, match=r"line 2: .*header 'cidr,timezone'"):
        IpTimezones.load(path)


def test_timezone_batches_answer_every_row_of_an_arrow_batch():
    keys = pa.RecordBatch.from_pydict(
        {"_ctx_lat": [35.68, None, None], "_ctx_lon": [139.69, None, None], "_ctx_ip": [None, "192.0.2.1", None]},
        schema=pa.schema([("_ctx_lat", pa.float64()), ("_ctx_lon", pa.float64()), ("_ctx_ip", pa.string())]),
    )
    (out,) = resolve_timezone_batches(IPS, frozenset({"Asia/Tokyo", "Europe/London"}))(iter([keys]))
    assert out.column("_ctx_tz").to_pylist() == ["Asia/Tokyo", "Europe/London", None]
    assert out.column("_ctx_tz_source").to_pylist() == ["geo", "ip", None]


# --- config/context.yaml ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "expected"),
    [(0, "night"), (5, "night"), (6, "morning"), (11, "morning"), (12, "afternoon"), (16, "afternoon"),
     (17, "evening"), (21, "evening"), (22, "night"), (23, "night")],
)  # fmt: skip
def test_dayparts_change_exactly_at_their_start_hour(hour, expected):
    assert daypart(hour, CFG) == expected


@pytest.mark.parametrize("hour", [-1, 24, None])
def test_an_hour_outside_the_day_is_an_error(hour):
    with pytest.raises(ValueError, match="0-23"):
        daypart(hour, CFG)


def _shipped() -> dict:
    return yaml.safe_load((REPO_ROOT / "config" / "context.yaml").read_text())


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "context.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _with(**changes) -> dict:
    doc = _shipped()
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            doc[section][sub] = value
        else:
            doc[section] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "where", "problem"),
    [
        (_with(dayparts=[{"name": "day", "start_hour": 6}, {"name": "night", "start_hour": 22}]),
         "dayparts #1 (day)", "hours 0-5 would have no daypart"),
        (_with(dayparts=[{"name": "a", "start_hour": 0}, {"name": "b", "start_hour": 12},
                         {"name": "c", "start_hour": 12}]), "dayparts #3 (c)", "overlaps 'b'"),
        (_with(dayparts=[{"name": "a", "start_hour": 0}, {"name": "b", "start_hour": 18},
                         {"name": "c", "start_hour": 12}]), "dayparts #3 (c)", "overlaps 'b'"),
        (_with(dayparts=[{"name": "a", "start_hour": 0, "end_hour": 6}]), "dayparts #1", "unknown keys ['end_hour']"),
        (_with(dayparts=[{"name": "a", "start_hour": 24}]), "dayparts #1 (a)", "whole hour 0-23"),
        (_with(dayparts=[]), "dayparts", "non-empty list"),
        (_with(timezone_default="UTC"), "file", "unknown keys ['timezone_default']"),
        (_with(session_phase__deep_min_pages=5), "session_phase", "unknown keys ['deep_min_pages']"),
        (_with(session_phase__browsing_min_events=0), "session_phase.browsing_min_events", "at least 1"),
        (_with(session_phase__deep_min_page_depth=2.5), "session_phase.deep_min_page_depth", "whole number"),
        (_with(engaged_gap_cap_seconds="30s"), "engaged_gap_cap_seconds", "positive number"),
    ],
    ids=["gap-at-midnight", "same-start", "out-of-order", "unknown-daypart-key", "hour-24", "no-dayparts",
         "unknown-key", "unknown-phase-key", "zero-threshold", "fractional-threshold", "cap-not-a-number"],
)  # fmt: skip
def test_bad_context_config_names_the_file_and_the_key(tmp_path, doc, where, problem):
    path = _write(tmp_path, doc)
    with pytest.raises(InvalidConfigError) as caught:
        ContextConfig.load(path)
    assert (caught.value.path, caught.value.where) == (path, where)
    assert problem in caught.value.problem


def test_the_shipped_config_loads_with_the_documented_thresholds():
    assert (CFG.browsing_min_events, CFG.deep_min_page_depth, CFG.deep_min_product_views) == (3, 5, 3)
    assert [(p.name, p.start_hour) for p in CFG.dayparts] == [
        ("night", 0),
        ("morning", 6),
        ("afternoon", 12),
        ("evening", 17),
        ("night", 22),
    ]
    assert CFG.engaged_gap_cap_seconds == 30.0


# --- session phase ------------------------------------------------------------------------------------


def phase(events=1, depth=1, products=0, carts=0, checkout=False, converted=False, cfg=CFG) -> str:
    return session_phase(events, depth, products, carts, checkout, converted, cfg)


@pytest.mark.parametrize(
    ("session", "expected"),
    [
        ({}, "entry"),
        ({"events": 2}, "entry"),  # one short of browsing
        ({"events": 3}, "browsing"),
        ({"events": 9, "depth": 4, "products": 2}, "browsing"),  # one short of deep on both counts
        ({"events": 9, "depth": 5}, "deep"),
        ({"events": 3, "products": 3}, "deep"),
        ({"events": 1, "carts": 1}, "checkout"),  # a cart add beats everything, even in a one-event session
        ({"events": 20, "depth": 9, "checkout": True}, "checkout"),
        ({"events": 2, "converted": True}, "checkout"),
    ],
)
def test_session_phase_takes_the_first_stage_reached(session, expected):
    assert phase(**session) == expected


def test_session_phase_follows_the_config():
    strict = replace(CFG, browsing_min_events=10)
    assert (phase(events=9), phase(events=9, cfg=strict)) == ("browsing", "entry")


# --- user agents --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("iphone_safari", ("mobile", "iOS 17.4", "Mobile Safari 17")),
        ("android_chrome_mobile", ("mobile", "Android 14", "Chrome Mobile 124")),
        ("ipad", ("tablet", "iOS 17.4", "Mobile Safari 17")),
        ("android_tablet", ("tablet", "Android 13", "Chrome 124")),
        ("kindle_fire", ("tablet", "Android 4.0", "Amazon Silk 3")),
        ("windows_chrome", ("desktop", "Windows 10", "Chrome 124")),
        ("macos_firefox", ("desktop", "Mac OS X 14.4", "Firefox 125")),
        ("googlebot", ("bot", None, "Googlebot 2")),
    ],
)
def test_user_agents_give_device_type_os_and_browser(name, expected):
    assert parse_user_agent(UA[name]) == expected


@pytest.mark.parametrize("ua", [None, "", "   ", "ua"])
def test_an_empty_or_meaningless_user_agent_gives_nothing(ua):
    assert parse_user_agent(ua) == (None, None, None)


def test_a_tool_without_an_os_has_a_browser_but_no_device_type():
    assert parse_user_agent("curl/8.5.0") == (None, None, "curl 8")


def test_user_agent_batches_answer_every_row_of_an_arrow_batch():
    agents = pa.RecordBatch.from_pydict({"_ctx_ua": [UA["ipad"], "curl/8.5.0"]})
    (out,) = parse_user_agent_batches(iter([agents]))
    assert out.to_pylist() == [
        {"_ctx_ua": UA["ipad"], "ua_device_type": "tablet", "ua_os": "iOS 17.4", "ua_browser": "Mobile Safari 17"},
        {"_ctx_ua": "curl/8.5.0", "ua_device_type": None, "ua_os": None, "ua_browser": "curl 8"},
    ]
