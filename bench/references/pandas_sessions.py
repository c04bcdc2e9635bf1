"""The pandas reference: landing NDJSON -> deduplicated canonical events -> sessions with core features.

    .venv/bin/python bench/references/pandas_sessions.py LANDING_DIR OUT.parquet

The floor of what intentlake's bronze + silver do on one core, written the straightforward way:

- every line goes through the project's own pure-Python adapters and JSON Schema check
  (`spark_jobs.bronze.normalize.normalize_records`, the function bronze applies to each line), so what is
  accepted or rejected is decided exactly as bronze decides it;
- dedup by the default bronze keys (session_id, event_id; a missing session id is a value of its own),
  keeping the earliest received copy;
- sessions per device in event-time order with the rules of spark_jobs/silver/sessions.py and the settings in
  force (INTENTLAKE_*, defaults otherwise): a client session id wins, else a gap of at least the idle timeout or
  reaching the maximum length starts a new session; session ids as silver makes them;
- the core features of silver.sessions (counts, depth, dwell, engaged time, scroll depth, checkout, converted).

No quarantine table, no Delta, no context, identity, micro-moments or gold: see bench/README.md.
Prints one JSON line with its own timings (the caller measures the whole process).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from spark_jobs.bronze.normalize import Limits, RejectedEvent, decode_record, normalize_records
from spark_jobs.settings import Settings, interval_seconds
from spark_jobs.silver.sessions import client_session_id

VIEW_TYPES = ("page_view", "product_view")
SETTINGS = Settings.from_env()  # the same INTENTLAKE_* settings the pipeline run sees
TIMEOUT_US = interval_seconds(SETTINGS.session_timeout) * 1_000_000
MAX_LENGTH_US = interval_seconds(SETTINGS.max_session_length) * 1_000_000
ENGAGED_GAP_CAP_S = float(yaml.safe_load(SETTINGS.context_file.read_text())["engaged_gap_cap_seconds"])


def read_events(landing: Path) -> tuple[pd.DataFrame, int, int]:
    """Every *.ndjson line of the landing zone through bronze's adapters -> (accepted events, lines, rejected)."""
    limits = Limits.from_settings(SETTINGS)
    rows: list[tuple] = []
    lines = rejected = 0
    for path in sorted(landing.glob("*.ndjson")):
        source_file = str(path)
        for raw in path.read_bytes().split(b"\n"):
            if not raw:
                continue
            lines += 1
            try:
                outcomes = normalize_records(decode_record(raw), limits)
            except RejectedEvent:
                rejected += 1
                continue
            for _, event in outcomes:
                if isinstance(event, RejectedEvent):
                    rejected += 1
                    continue
                page = event["page"] or {}
                props = event["properties"] or {}
                rows.append((event["event_id"], event["session_id"], event["anonymous_id"], event["event_type"],
                             event["occurred_at"], event["received_at"], source_file, page.get("path"),
                             props.get("scroll_depth"), props.get("product_id")))  # fmt: skip
    columns = ["event_id", "session_id", "anonymous_id", "event_type", "occurred_at", "received_at", "source_file",
               "path", "scroll_depth", "product_id"]  # fmt: skip
    events = pd.DataFrame(rows, columns=columns)
    for name in ("occurred_at", "received_at"):
        events[name] = pd.to_datetime(events[name], format="ISO8601", utc=True).astype("datetime64[us, UTC]")
    return events, lines, rejected


def deduplicate(events: pd.DataFrame) -> pd.DataFrame:
    """One row per (session_id, event_id), the earliest received (as bronze.first_of_each_event orders them)."""
    ordered = events.sort_values(["received_at", "source_file", "occurred_at", "anonymous_id"], kind="stable")
    return ordered.drop_duplicates(["session_id", "event_id"], keep="first")


def sessionize(events: pd.DataFrame) -> pd.DataFrame:
    """Add session_key and sessionized_by (silver's rules; idle timeout vectorised, max length per long run)."""
    events = events.sort_values(["anonymous_id", "occurred_at", "event_id"], kind="stable").reset_index(drop=True)
    at = events["occurred_at"].astype("int64").to_numpy()
    client = events["session_id"].notna().to_numpy()
    key = np.empty(len(events), dtype=object)
    reason = np.empty(len(events), dtype=object)
    key[client] = events["anonymous_id"][client] + "#c#" + events["session_id"][client]
    reason[client] = "client_session_id"

    idle = events[~client]
    idle_at = at[~client]
    device = idle["anonymous_id"].to_numpy()
    first_of_device = np.r_[True, device[1:] != device[:-1]]
    gap = np.r_[0, np.diff(idle_at)]
    run = np.cumsum(first_of_device | (gap >= TIMEOUT_US))  # runs of activity with gaps under the timeout
    why = np.full(len(idle), "idle_timeout", dtype=object)
    run_start = pd.Series(idle_at).groupby(run).transform("min").to_numpy()
    start = run_start.copy()
    run_end = pd.Series(idle_at).groupby(run).transform("max").to_numpy()
    for r in np.unique(run[(run_end - run_start) >= MAX_LENGTH_US]):  # marathons: split in event-time order
        positions = np.flatnonzero(run == r)
        current, current_why = idle_at[positions[0]], "idle_timeout"
        for p in positions:
            if idle_at[p] - current >= MAX_LENGTH_US:
                current, current_why = idle_at[p], "max_length"
            start[p], why[p] = current, current_why
    key[~client] = device + "#" + start.astype(str)
    reason[~client] = why
    events["session_key"] = key
    events["sessionized_by"] = reason
    return events


def build_sessions(keyed: pd.DataFrame) -> pd.DataFrame:
    """One row per session with the core features of silver.sessions."""
    e = keyed.sort_values(["session_key", "occurred_at", "event_id"], kind="stable").reset_index(drop=True)
    seconds = e["occurred_at"].astype("int64") / 1_000_000
    e["_gap"] = seconds.groupby(e["session_key"]).shift(-1) - seconds
    is_view = e["event_type"].isin(VIEW_TYPES)
    e["_dwell"] = e["_gap"].where(is_view)
    e["_engaged"] = e["_gap"].clip(upper=ENGAGED_GAP_CAP_S)
    e["_view_path"] = e["path"].where(is_view)
    e["_product"] = e["product_id"].where(e["event_type"] == "product_view")
    e["_depth"] = pd.to_numeric(e["scroll_depth"], errors="coerce")
    e["_checkout"] = e["path"].fillna("").str.startswith("/checkout")
    for name in ("page_view", "product_view", "scroll", "click", "cart_add", "wishlist_add", "search", "purchase"):
        e[f"_is_{name}"] = e["event_type"] == name
    e["_views"] = is_view
    g = e.groupby("session_key", sort=False)
    s = g.agg(
        anonymous_id=("anonymous_id", "first"),
        sessionized_by=("sessionized_by", "first"),
        client_session_id=("session_id", "first"),
        session_start=("occurred_at", "min"),
        session_end=("occurred_at", "max"),
        event_count=("event_id", "size"),
        page_depth=("_view_path", "nunique"),
        page_views=("_views", "sum"),
        dwell_seconds=("_dwell", "mean"),
        dwell_total_seconds=("_dwell", "sum"),
        engaged_seconds=("_engaged", "sum"),
        max_scroll_depth=("_depth", "max"),
        scrolls=("_is_scroll", "sum"),
        clicks=("_is_click", "sum"),
        product_views=("_is_product_view", "sum"),
        distinct_products=("_product", "nunique"),
        cart_adds=("_is_cart_add", "sum"),
        wishlist_adds=("_is_wishlist_add", "sum"),
        searches=("_is_search", "sum"),
        checkout_started=("_checkout", "any"),
        converted=("_is_purchase", "any"),
    ).reset_index(drop=True)
    s[["dwell_seconds", "max_scroll_depth"]] = s[["dwell_seconds", "max_scroll_depth"]].fillna(0.0)
    start_us = s["session_start"].astype("int64")
    hashed = [
        "s-" + hashlib.sha256(f"{a}|{u}".encode()).hexdigest()[:32]
        for a, u in zip(s["anonymous_id"], start_us, strict=True)
    ]
    # client sessions: silver's id (the simulated ones never reach the maximum length, so none is split)
    clients = [client_session_id(a, c) if isinstance(c, str) else None
               for a, c in zip(s["anonymous_id"], s["client_session_id"], strict=True)]  # fmt: skip
    s["session_id"] = pd.Series(clients, index=s.index).where(s["client_session_id"].notna(),
                                                             pd.Series(hashed, index=s.index))  # fmt: skip
    s["duration_seconds"] = (s["session_end"] - s["session_start"]).dt.total_seconds()
    return s.drop(columns="client_session_id")


def main(argv: list[str]) -> int:
    landing, out = Path(argv[0]), Path(argv[1])
    t0 = time.monotonic()
    events, lines, rejected = read_events(landing)
    t1 = time.monotonic()
    unique = deduplicate(events)
    t2 = time.monotonic()
    sessions = build_sessions(sessionize(unique))
    t3 = time.monotonic()
    sessions.to_parquet(out, index=False)
    t4 = time.monotonic()
    print(json.dumps({"lines": lines, "rejected": rejected, "accepted": len(events), "events": len(unique),
                      "sessions": len(sessions), "seconds": {"parse": t1 - t0, "dedup": t2 - t1,
                      "sessions": t3 - t2, "write": t4 - t3, "total": t4 - t0}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
