"""The session rules on one device's events, without Spark (`assign_sessions`, which silver's per-device
sessionizer runs)."""

import random

import pytest

from spark_jobs.silver.sessions import assign_sessions

pytestmark = pytest.mark.unit

S = 1_000_000  # microseconds per second
TIMEOUT, MAX = 300 * S, 3600 * S


def keys_of(at_seconds: list[float], client: list[str | None] | None = None) -> tuple[list[str], list[str]]:
    ids = [f"e{i:03d}" for i in range(len(at_seconds))]
    client = client or [None] * len(ids)
    return assign_sessions("dev", ids, client, [int(t * S) for t in at_seconds], TIMEOUT, MAX)


def test_a_gap_exactly_at_the_timeout_starts_a_new_session_and_one_just_under_does_not():
    keys, reasons = keys_of([0, 299.999999, 599.999999])
    assert keys == ["dev#0", "dev#0", "dev#599999999"]
    assert reasons == ["idle_timeout"] * 3


def test_reaching_the_maximum_length_splits_a_marathon():
    keys, reasons = keys_of([i * 200 for i in range(20)])  # one event every 200 s for over an hour
    assert len(set(keys)) == 2
    assert keys[18] == f"dev#{3600 * S}" and reasons[18] == "max_length"
    assert reasons[:18] == ["idle_timeout"] * 18


def test_a_client_session_id_is_honoured_across_an_idle_gap():
    keys, reasons = keys_of([0, 10, 3000], client=["c1", "c1", "c1"])
    assert keys == ["dev#c#c1"] * 3
    assert reasons == ["client_session_id"] * 3


def test_a_client_session_that_never_ends_is_split_at_the_maximum_length_into_distinct_pieces():
    """A stuck cookie or a bot keeps one client session id for days: the maximum length applies to it as
    to the sessions the pipeline cuts, and each later piece gets its own key (from its start)."""
    hours = [0, 1800, 3599, 3600, 5000, 7300, 7400]
    keys, reasons = keys_of(hours, client=["c1"] * len(hours))
    assert keys == ["dev#c#c1"] * 3 + [f"dev#c#c1#{3600 * S}"] * 2 + [f"dev#c#c1#{7300 * S}"] * 2
    assert reasons == ["client_session_id"] * 3 + ["max_length"] * 4
    other, _ = keys_of([0, 4000], client=["c2", "c1"])  # each client id has its own clock
    assert other == ["dev#c#c2", "dev#c#c1"]


def test_the_order_events_arrive_in_does_not_change_their_sessions():
    times = [0, 20, 40, 400, 410, 2000, 2001, 2002]
    expected = dict(zip(range(len(times)), keys_of(times)[0], strict=True))
    order = list(range(len(times)))
    random.Random(3).shuffle(order)
    keys, _ = assign_sessions(
        "dev", [f"e{i:03d}" for i in order], [None] * len(order), [times[i] * S for i in order], TIMEOUT, MAX
    )
    assert {i: k for i, k in zip(order, keys, strict=True)} == expected
