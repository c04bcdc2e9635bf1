"""The DuckDB reference: landing NDJSON -> deduplicated events -> sessions with core features, in SQL.

    .venv/bin/python bench/references/duckdb_sessions.py LANDING_DIR OUT.parquet [THREADS]

The same work as bench/references/pandas_sessions.py, in DuckDB SQL on the same cores (THREADS, default all):

- each landing line is read as text and parsed with DuckDB's JSON functions; the source is recognised by
  the fields each format carries (Segment spec or the raw web SDK, the two the simulator writes) and mapped
  onto the canonical fields sessions need, with the same vocabularies as the project's adapters;
- rejected: lines that are not JSON objects, of no known shape, of an unknown event name, without an event
  id, a device id or a readable time, or outside the clock-skew / event-age limits. That is the part of
  bronze's JSON Schema check that decides anything for sessions, not all of it (the comparison with
  silver.sessions is what shows it is enough on this input);
- dedup by (session_id, event_id) with a missing session id as a value of its own, earliest received first;
- sessions with silver's rules and the settings in force (INTENTLAKE_*, defaults otherwise): client session
  id, else idle timeout, with the maximum-length split done by a recursive query over the few runs of activity
  longer than the maximum;
- the core features of silver.sessions.

Prints one JSON line with its own timings (the caller measures the whole process).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import duckdb
import yaml

from spark_jobs.bronze.normalize import SEGMENT_TRACK_EVENTS, WEB_SDK_KINDS
from spark_jobs.settings import Settings, interval_seconds

SETTINGS = Settings.from_env()  # the same INTENTLAKE_* settings the pipeline run sees
TIMEOUT_US = interval_seconds(SETTINGS.session_timeout) * 1_000_000
MAX_LENGTH_US = interval_seconds(SETTINGS.max_session_length) * 1_000_000
MAX_SKEW_US = interval_seconds(SETTINGS.max_clock_skew) * 1_000_000
MAX_AGE_US = interval_seconds(SETTINGS.max_event_age) * 1_000_000
ENGAGED_GAP_CAP_S = float(yaml.safe_load(SETTINGS.context_file.read_text())["engaged_gap_cap_seconds"])


def _map(pairs: dict[str, str]) -> str:
    """A Python dict as a DuckDB MAP literal (the adapters' vocabularies, not a copy of them)."""
    keys = ", ".join(f"'{k}'" for k in pairs)
    values = ", ".join(f"'{v}'" for v in pairs.values())
    return f"MAP([{keys}], [{values}])"


def _lines_sql(landing: Path) -> str:
    files = str(landing / "*.ndjson").replace("'", "''")
    # one column per line: no delimiter, quote or escape character can split or alter it
    return (
        f"SELECT line, filename AS source_file FROM read_csv('{files}', columns = {{'line': 'VARCHAR'}}, "
        "header = false, delim = '\\0', quote = '', escape = '', auto_detect = false, filename = true, "
        "strict_mode = false, null_padding = false, new_line = '\\n')"
    )


def events_sql(landing: Path) -> str:
    """The accepted canonical events (the columns sessions need), before dedup."""
    return f"""
WITH lines AS ({_lines_sql(landing)}),
objects AS (
    SELECT CAST(line AS JSON) AS j, source_file FROM lines
    WHERE line IS NOT NULL AND json_valid(line) AND json_type(CAST(line AS JSON)) = 'OBJECT'
),
sourced AS (
    SELECT j, source_file,
        CASE
            WHEN json_exists(j, '$.schema_version') AND json_exists(j, '$.event_type') THEN 'canonical'
            WHEN json_exists(j, '$.type') AND (json_exists(j, '$.messageId') OR json_exists(j, '$.anonymousId')
                 OR json_exists(j, '$.userId') OR json_exists(j, '$.event')) THEN 'segment'
            WHEN json_exists(j, '$.eid') OR (json_exists(j, '$.sdk') AND json_exists(j, '$.kind')) THEN 'web_sdk'
        END AS source
    FROM objects
),
segment AS (
    SELECT
        j->>'$.messageId' AS event_id,
        NULL::VARCHAR AS session_id,
        coalesce(j->>'$.anonymousId', CASE WHEN j->>'$.userId' <> '' THEN 'uid:' || (j->>'$.userId') END)
            AS anonymous_id,
        CASE j->>'$.type'
            WHEN 'track' THEN {_map(SEGMENT_TRACK_EVENTS)}[j->>'$.event']
            WHEN 'page' THEN 'page_view' WHEN 'screen' THEN 'page_view'
            WHEN 'identify' THEN 'identify' WHEN 'alias' THEN 'identify'
        END AS event_type,
        epoch_us(try_cast(coalesce(j->>'$.timestamp', j->>'$.originalTimestamp') AS TIMESTAMPTZ)) AS occurred_us,
        coalesce(j->>'$.receivedAt', j->>'$.sentAt') IS NULL AS received_missing,
        epoch_us(try_cast(coalesce(j->>'$.receivedAt', j->>'$.sentAt') AS TIMESTAMPTZ)) AS received_us,
        coalesce(CASE WHEN j->>'$.type' = 'page' THEN j->>'$.properties.path' END, j->>'$.context.page.path')
            AS path,
        j->>'$.properties.scroll_depth' AS scroll_depth,
        j->>'$.properties.product_id' AS product_id,
        source_file
    FROM sourced WHERE source = 'segment'
),
web AS (
    SELECT
        j->>'$.eid' AS event_id,
        j->>'$.sid' AS session_id,
        j->>'$.anon' AS anonymous_id,
        {_map(WEB_SDK_KINDS)}[j->>'$.kind'] AS event_type,
        try_cast(j->>'$.ts' AS BIGINT) * 1000 AS occurred_us,
        j->>'$.recv_ts' IS NULL AS received_missing,
        try_cast(j->>'$.recv_ts' AS BIGINT) * 1000 AS received_us,
        CASE WHEN j->>'$.url' IS NOT NULL
             THEN coalesce(nullif(regexp_extract(j->>'$.url', '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*([^?#]*)', 1), ''),
                           '/')
        END AS path,
        j->>'$.data.scroll_depth' AS scroll_depth,
        j->>'$.data.product_id' AS product_id,
        source_file
    FROM sourced WHERE source = 'web_sdk'
),
canonical AS (
    SELECT * REPLACE (CASE WHEN received_missing THEN occurred_us ELSE received_us END AS received_us)
    FROM (SELECT * FROM segment UNION ALL BY NAME SELECT * FROM web)
)
SELECT event_id, session_id, anonymous_id, event_type, make_timestamp(occurred_us) AS occurred_at,
       received_us, source_file, path, scroll_depth, product_id
FROM canonical
WHERE event_id IS NOT NULL AND anonymous_id IS NOT NULL AND event_type IS NOT NULL AND occurred_us IS NOT NULL
  AND received_us IS NOT NULL
  AND occurred_us - received_us <= {MAX_SKEW_US} AND received_us - occurred_us <= {MAX_AGE_US}
"""


SESSIONS_SQL = f"""
CREATE TEMP TABLE keyed AS
WITH unique_events AS (
    SELECT * FROM accepted
    QUALIFY row_number() OVER (PARTITION BY session_id, event_id
                               ORDER BY received_us, source_file, occurred_at, anonymous_id) = 1
),
idle AS (  -- events without a client session id: runs of activity split by the idle timeout
    SELECT *, epoch_us(occurred_at) AS at_us,
        sum(CASE WHEN lag_us IS NULL OR epoch_us(occurred_at) - lag_us >= {TIMEOUT_US} THEN 1 ELSE 0 END)
            OVER (PARTITION BY anonymous_id ORDER BY occurred_at, event_id) AS run
    FROM (SELECT *, lag(epoch_us(occurred_at)) OVER (PARTITION BY anonymous_id ORDER BY occurred_at, event_id)
              AS lag_us
          FROM unique_events WHERE session_id IS NULL)
),
runs AS (
    SELECT *, min(at_us) OVER w AS run_start, max(at_us) OVER w AS run_end,
        row_number() OVER (PARTITION BY anonymous_id, run ORDER BY occurred_at, event_id) AS n
    FROM idle WINDOW w AS (PARTITION BY anonymous_id, run)
),
long_runs AS (SELECT * FROM runs WHERE run_end - run_start >= {MAX_LENGTH_US}),
split AS (  -- the maximum-length rule, in event-time order, only where a run is long enough to need it
    WITH RECURSIVE walk(anonymous_id, run, n, event_id, start_us, why) AS (
        SELECT anonymous_id, run, n, event_id, at_us, 'idle_timeout' FROM long_runs WHERE n = 1
        UNION ALL
        SELECT r.anonymous_id, r.run, r.n, r.event_id,
            CASE WHEN r.at_us - w.start_us >= {MAX_LENGTH_US} THEN r.at_us ELSE w.start_us END,
            CASE WHEN r.at_us - w.start_us >= {MAX_LENGTH_US} THEN 'max_length' ELSE w.why END
        FROM walk w JOIN long_runs r ON r.anonymous_id = w.anonymous_id AND r.run = w.run AND r.n = w.n + 1
    )
    SELECT anonymous_id, run, n, start_us, why FROM walk
)
SELECT r.event_id, r.session_id, r.anonymous_id, r.event_type, r.occurred_at, r.path, r.scroll_depth,
    r.product_id,
    r.anonymous_id || '#' || coalesce(s.start_us, r.run_start) AS session_key,
    coalesce(s.why, 'idle_timeout') AS sessionized_by,
    coalesce(s.start_us, r.run_start) AS start_us
FROM runs r LEFT JOIN split s ON s.anonymous_id = r.anonymous_id AND s.run = r.run AND s.n = r.n
UNION ALL BY NAME
SELECT event_id, session_id, anonymous_id, event_type, occurred_at, path, scroll_depth, product_id,
    anonymous_id || '#c#' || session_id AS session_key, 'client_session_id' AS sessionized_by,
    NULL::BIGINT AS start_us
FROM unique_events WHERE session_id IS NOT NULL;

CREATE TEMP TABLE sessions AS
WITH gaps AS (
    SELECT *,
        (lead(epoch_us(occurred_at)) OVER w - epoch_us(occurred_at)) / 1e6 AS gap,
        event_type IN ('page_view', 'product_view') AS is_view,
        try_cast(scroll_depth AS DOUBLE) AS depth
    FROM keyed WINDOW w AS (PARTITION BY session_key ORDER BY occurred_at, event_id)
),
agg AS (
    SELECT session_key, any_value(anonymous_id) AS anonymous_id, any_value(sessionized_by) AS sessionized_by,
        any_value(session_id) AS client_session_id,
        min(occurred_at) AS session_start, max(occurred_at) AS session_end,
        count(*)::INT AS event_count,
        count(DISTINCT CASE WHEN is_view THEN path END)::INT AS page_depth,
        count_if(is_view)::INT AS page_views,
        coalesce(avg(CASE WHEN is_view THEN gap END), 0.0) AS dwell_seconds,
        coalesce(sum(CASE WHEN is_view THEN gap END), 0.0) AS dwell_total_seconds,
        coalesce(sum(CASE WHEN gap IS NOT NULL THEN least(gap, {ENGAGED_GAP_CAP_S}) END), 0.0) AS engaged_seconds,
        -- least() skips a null: the last event's missing gap must not count as the cap
        coalesce(max(depth), 0.0) AS max_scroll_depth,
        count_if(event_type = 'scroll')::INT AS scrolls,
        count_if(event_type = 'click')::INT AS clicks,
        count_if(event_type = 'product_view')::INT AS product_views,
        count(DISTINCT CASE WHEN event_type = 'product_view' THEN product_id END)::INT AS distinct_products,
        count_if(event_type = 'cart_add')::INT AS cart_adds,
        count_if(event_type = 'wishlist_add')::INT AS wishlist_adds,
        count_if(event_type = 'search')::INT AS searches,
        coalesce(bool_or(starts_with(path, '/checkout')), false) AS checkout_started,
        bool_or(event_type = 'purchase') AS converted
    FROM gaps GROUP BY session_key
)
SELECT * EXCLUDE (session_key, client_session_id),
    CASE WHEN client_session_id IS NOT NULL
         THEN 'c-' || substr(sha256(length(anonymous_id)::VARCHAR || '|' || anonymous_id || '|'
                                    || length(client_session_id)::VARCHAR || '|' || client_session_id), 1, 32)
         ELSE 's-' || substr(sha256(anonymous_id || '|' || epoch_us(session_start)::VARCHAR), 1, 32) END
        AS session_id,
    (epoch_us(session_end) - epoch_us(session_start)) / 1e6 AS duration_seconds
FROM agg;
"""


def main(argv: list[str]) -> int:
    landing, out = Path(argv[0]), Path(argv[1])
    threads = int(argv[2]) if len(argv) > 2 else os.cpu_count() or 1
    t0 = time.monotonic()
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}; SET TimeZone = 'UTC'")
    con.execute(f"CREATE TEMP TABLE accepted AS {events_sql(landing)}")
    t1 = time.monotonic()
    con.execute(SESSIONS_SQL)
    t2 = time.monotonic()
    target = str(out).replace("'", "''")
    con.execute(f"COPY sessions TO '{target}' (FORMAT parquet)")
    t3 = time.monotonic()
    lines = con.execute(f"SELECT count(*) FROM ({_lines_sql(landing)})").fetchone()[0]
    accepted = con.execute("SELECT count(*) FROM accepted").fetchone()[0]
    events = con.execute("SELECT count(*) FROM keyed").fetchone()[0]
    sessions = con.execute("SELECT count(*) FROM sessions").fetchone()[0]
    seconds = {"parse": t1 - t0, "sessions": t2 - t1, "write": t3 - t2, "total": t3 - t0}
    print(json.dumps({"lines": lines, "accepted": accepted, "events": events, "sessions": sessions, "threads": threads,
                      "seconds": seconds}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
