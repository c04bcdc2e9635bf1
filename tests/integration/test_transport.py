"""The destinations' HTTP transport against a local server: the rate it keeps, 429 with Retry-After,
5xx and stalls retried with backoff, auth failures stopping at once without showing the token."""

from __future__ import annotations

import pytest

from spark_jobs.activation.local_servers import ContractServer, Fault
from spark_jobs.activation.transport import (
    DestinationAuthError,
    DestinationUnavailable,
    RetryPolicy,
    TokenBucket,
    Transport,
    retry_after_seconds,
)
from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.integration

TOKEN = "pat-test-0123456789"


class Echo(ContractServer):
    def handle(self, method, path, body, headers):
        return 200, {"ok": True, "path": path}, {}


def _transport(server, rate=50.0, sleeps=None, **policy):
    sleep = sleeps.append if sleeps is not None else None
    kwargs = {"sleep": sleep} if sleep else {}
    return Transport(
        "hubspot_test", server.url, {"Authorization": f"Bearer {TOKEN}"}, rate, RetryPolicy(**policy), seed=1, **kwargs
    )


def test_a_429_burst_waits_what_retry_after_says_then_goes_through():
    sleeps: list[float] = []
    with Echo(TOKEN) as server, _transport(server, sleeps=sleeps) as transport:
        server.faults.extend([Fault(429, "7"), Fault(429, "3")])
        response = transport.request("POST", "/x", json={"a": 1})
    assert response.status_code == 200 and len(server.received) == 1
    assert [s for s in sleeps if s >= 1] == [7.0, 3.0]  # what the server asked, nothing invented
    assert (transport.stats.throttled, transport.stats.retries) == (2, 2)


def test_5xx_and_a_stalled_answer_are_retried_with_capped_jittered_backoff():
    sleeps: list[float] = []
    with Echo(TOKEN) as server, _transport(server, sleeps=sleeps, timeout_seconds=0.3, cap_seconds=2.0) as transport:
        server.faults.extend([Fault(503), Fault(stall_seconds=1.0), Fault(500)])
        response = transport.request("POST", "/x", json={})
    assert response.status_code == 200 and len(server.received) == 1
    assert (transport.stats.server_errors, transport.stats.timeouts, transport.stats.retries) == (2, 1, 3)
    backoffs = [s for s in sleeps if s > 0.05 or s == 0]  # the limiter's own waits are tiny at 50/s
    assert all(0 <= s <= 2.0 for s in backoffs)


def test_retries_run_out_with_an_error_that_says_what_happened():
    with Echo(TOKEN) as server, _transport(server, sleeps=[], max_tries=3) as transport:
        server.faults.extend([Fault(502)] * 3)
        with pytest.raises(DestinationUnavailable, match=r"hubspot_test: POST /x: 502 from the server, 3 tries"):
            transport.request("POST", "/x", json={})
    assert server.received == []


def test_a_refused_token_stops_at_once_and_the_message_names_the_variable_not_the_token():
    with Echo("another-token") as server, _transport(server, sleeps=[]) as transport:
        with pytest.raises(DestinationAuthError) as caught:
            transport.request("POST", "/x", json={})
    assert "INTENTLAKE_DEST_HUBSPOT_TEST_TOKEN" in str(caught.value) and TOKEN not in str(caught.value)
    assert server.refused == [("/x", 401)]  # no retry of a refused token


def test_the_limiter_keeps_the_configured_rate_so_the_vendor_never_throttles():
    """The server allows 5 requests per second and says 429 past that; the client is set to 4.5/s."""
    with Echo(TOKEN, rate_limit=(5, 1.0)) as server, _transport(server, rate=4.5) as transport:
        for n in range(14):
            assert transport.request("GET", f"/r/{n}").status_code == 200
    arrivals = [r.at for r in server.received]
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 5 and not [s for _, s in server.refused if s == 429]
    assert transport.stats.throttled == 0
    assert (arrivals[-1] - arrivals[0]) >= 13 / 4.5 * 0.95  # and it does not go much slower either


def test_token_bucket_spacing_with_a_fake_clock():
    now = [0.0]
    bucket = TokenBucket(10.0, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(21):
        bucket.acquire()
    assert now[0] == pytest.approx(2.0)  # 21 requests at 10/s: the first at once, then every 0.1 s


def test_retry_after_reads_seconds_and_http_dates():
    from datetime import UTC, datetime

    now = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Thu, 03 Dec 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None) is None


def test_a_burst_makes_up_a_late_wake_up_and_no_window_exceeds_rate_times_t_plus_burst_minus_one():
    now = [0.0]
    late = [0.0]

    def sleep(seconds: float) -> None:  # a sleep wakes `late` s late, as a thread behind the GIL can
        now[0] += seconds + late[0]

    bucket = TokenBucket(10.0, burst=3, clock=lambda: now[0], sleep=sleep)
    sent = []
    for n in range(40):
        late[0] = 0.15 if n % 10 == 5 else 0.0  # 1.5 requests' worth: within the burst of 3
        bucket.acquire()
        sent.append(now[0])
    # the lost time is made up: 40 requests at 10/s in about 3.9 s, not 3.9 s plus every late wake-up
    assert sent[-1] == pytest.approx(3.9, abs=0.01)
    busiest = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert busiest <= 10 * 1.0 + 3 - 1
    strict = TokenBucket(10.0, clock=lambda: now[0], sleep=sleep)  # burst 1: the late time is lost
    now[0], late[0] = 0.0, 0.25
    for _ in range(5):
        strict.acquire()
    assert now[0] > 0.4 + 4 * 0.25 - 0.01


def test_a_destinations_burst_defaults_to_ten_ms_of_its_rate_and_refuses_a_bad_value(tmp_path):
    from spark_jobs.activation.destinations import load_destinations
    from spark_jobs.config import InvalidConfigError

    shipped = {d.type: d for d in load_destinations(REPO_ROOT / "config" / "destinations.yaml")}
    assert (shipped["braze"].requests_per_second, shipped["braze"].burst) == (990.0, 10)
    assert shipped["hubspot"].burst == 1  # 10/s: evenly spaced
    text = (REPO_ROOT / "config" / "destinations.yaml").read_text()
    bad = tmp_path / "destinations.yaml"
    bad.write_text(text.replace("      batch_size: 75\n", "      batch_size: 75\n      burst: 0\n", 1))
    with pytest.raises(InvalidConfigError, match="burst"):
        load_destinations(bad)
