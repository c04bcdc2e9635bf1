"""The Apache Flink reference: landing NDJSON -> deduplicated events -> sessions with core features, in PyFlink.

    .venv-flink/bin/python bench/references/flink_sessions.py LANDING_DIR OUT.parquet [PARALLELISM]

The same work as bench/references/pandas_sessions.py and duckdb_sessions.py, as one Flink job on a local mini
cluster (PARALLELISM, default all cores). It runs in its own venv, .venv-flink (`make bench-flink`, from
bench/requirements-flink.txt): PyFlink pins a py4j that is not pyspark's.

- Table API: the landing directory as a `filesystem` table in `raw` format (one BYTES value per line) with
  each line's file path as a metadata column; a Python table function puts every line through the project's
  own adapters and JSON Schema check (`normalize_records`, as bronze and the pandas reference do), so what is
  accepted is decided exactly as bronze decides it.
- DataStream API with event time (each event's timestamp is its occurred_at), two keyed process functions:
  - dedup, keyed by (session_id, event_id) (a missing session id is a value of its own, as in bronze): the
    copy received first (ties: source file, occurred_at, device), emitted when the watermark passes the
    latest event time among the copies;
  - sessions, keyed by device: silver's rules, then one row per session with the core features of
    silver.sessions.

Why not a session window: Flink's session windows (gap = the idle timeout) give the idle rule only. Silver
also splits a run of activity that reaches the maximum length (measured from the session's first event, so
where a run is split depends on the whole run up to there) and lets a client session id win over any gap (such
a session can span gaps longer than the timeout, and its events must not count in the idle sessions around
them). So the sessions function keeps the device's events in keyed state and does what a session window's
trigger would do, and the rest itself:

- events without a client session id: one event-time timer per device at its latest event + the idle
  timeout, moved forward as later events arrive. When the watermark passes it, no event can extend the
  device's runs of activity any more: they are split by the idle timeout, then by the maximum length in
  event-time order (silver's `assign_sessions`), emitted, and cleared from state;
- client-session events: kept until the end of input (a timer at the maximum watermark), since no gap ends
  such a session.

Watermarks: the input is bounded, and the only watermark is the one Flink sends at its end (no periodic
watermarks), so every timer fires with all events in: nothing is late and the sessions are silver's. A
continuous job would use a bounded-out-of-orderness strategy instead; an event behind that watermark would
then be sessionized apart from its neighbours, where silver recomputes the device (its late-events path).

Why STREAMING execution and not BATCH: on this bounded input BATCH mode (sorted keyed inputs, a perfect
watermark per key) is the obvious choice, but with PyFlink 2.3's Python keyed process functions it silently
lost events here (3,041 events in: 2,185 in the sessions, from 92 of 127 devices, the same at parallelism 1).
The cause is BATCH mode's keyed-state backend, which keeps only the current key's state (the Python worker
handles a bundle of keys behind the JVM's current key): with `execution.batch-state-backend.enabled: false`
BATCH mode gave all 3,041, and no faster than STREAMING mode, which keeps every key's state on the heap.

Settings (INTENTLAKE_*, defaults otherwise) are the pipeline's: idle timeout, maximum length, clock-skew and
event-age limits, engaged-gap cap. Prints one JSON line with its own timings (the caller measures the whole
process tree: this interpreter, Flink's JVM and its Python workers).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a file from .venv-flink, where the project is not installed
    sys.path.insert(0, str(REPO_ROOT))
# Flink's Python workers are started by its JVM from this process's environment: they need the project too
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))

import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from pyflink.common import Configuration, Row, Types, WatermarkStrategy  # noqa: E402
from pyflink.common.watermark_strategy import TimestampAssigner  # noqa: E402
from pyflink.datastream import KeyedProcessFunction, RuntimeExecutionMode, StreamExecutionEnvironment  # noqa: E402
from pyflink.datastream.state import ListStateDescriptor, ValueStateDescriptor  # noqa: E402
from pyflink.table import DataTypes, StreamTableEnvironment  # noqa: E402
from pyflink.table.udf import TableFunction, udtf  # noqa: E402

from spark_jobs.bronze.normalize import Limits, RejectedEvent, decode_record, normalize_records  # noqa: E402
from spark_jobs.settings import Settings, interval_seconds  # noqa: E402

SETTINGS = Settings.from_env()  # the same INTENTLAKE_* settings the pipeline run sees
VIEW_TYPES = ("page_view", "product_view")
END_OF_INPUT_MS = 2**63 - 1  # the watermark Flink sends when a bounded input is exhausted
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENT_FIELDS = ("event_id", "session_id", "anonymous_id", "event_type", "occurred_us", "received_us", "source_file",
                "path", "scroll_depth", "product_id")  # fmt: skip
_TEXT = (DataTypes.STRING(), Types.STRING())
_MICROS = (DataTypes.BIGINT(), Types.LONG())  # times as epoch microseconds, silver's precision
_NUMBER = (DataTypes.DOUBLE(), Types.DOUBLE())
_EVENT_KINDS = (_TEXT, _TEXT, _TEXT, _TEXT, _MICROS, _MICROS, _TEXT, _TEXT, _NUMBER, _TEXT)
EVENT_TYPES = [table for table, _ in _EVENT_KINDS]  # as the table function returns them
EVENT_ROW_TYPES = [stream for _, stream in _EVENT_KINDS]  # the same, as DataStream type information
SESSION_FIELDS = {
    "anonymous_id": Types.STRING(), "session_id": Types.STRING(), "sessionized_by": Types.STRING(),
    "session_start_us": Types.LONG(), "session_end_us": Types.LONG(), "event_count": Types.INT(),
    "page_depth": Types.INT(), "page_views": Types.INT(), "dwell_seconds": Types.DOUBLE(),
    "dwell_total_seconds": Types.DOUBLE(), "engaged_seconds": Types.DOUBLE(), "max_scroll_depth": Types.DOUBLE(),
    "scrolls": Types.INT(), "clicks": Types.INT(), "product_views": Types.INT(), "distinct_products": Types.INT(),
    "cart_adds": Types.INT(), "wishlist_adds": Types.INT(), "searches": Types.INT(),
    "checkout_started": Types.BOOLEAN(), "converted": Types.BOOLEAN(), "duration_seconds": Types.DOUBLE(),
}  # fmt: skip


def _micros(iso: str) -> int:
    """An adapter's ISO-8601 time -> epoch microseconds (no offset means UTC, as bronze reads it)."""
    moment = datetime.fromisoformat(iso)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def _number(text: str | None) -> float | None:
    """A property's text as a double, None when it is not a number (silver casts; a bad value is null)."""
    if text is None or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


class ParseLines(TableFunction):
    """One landing line -> its accepted canonical events (the columns sessions need); rejected lines vanish."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def eval(self, line: bytes | None, source_file: str):
        if not line:
            return
        try:
            outcomes = normalize_records(decode_record(line), self.limits)
        except RejectedEvent:
            return
        for _, event in outcomes:
            if isinstance(event, RejectedEvent):
                continue
            page = event["page"] or {}
            props = event["properties"] or {}
            yield Row(event["event_id"], event["session_id"], event["anonymous_id"], event["event_type"],
                      _micros(event["occurred_at"]), _micros(event["received_at"]), source_file, page.get("path"),
                      _number(props.get("scroll_depth")), props.get("product_id"))  # fmt: skip


class OccurredAt(TimestampAssigner):
    """Event time: occurred_at (Flink's timestamps are epoch milliseconds)."""

    def extract_timestamp(self, value, record_timestamp: int) -> int:
        return value[4] // 1000  # occurred_us


def session_row(anonymous_id: str, client_id: str | None, reason: str, events: list[tuple], gap_cap_s: float) -> Row:
    """One session's events (tuples of occurred_us, event_id, event_type, path, scroll_depth, product_id, in
    event-time order) -> its row with the core features of silver.sessions."""
    at = [e[0] for e in events]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(at)] + [None]  # to the next event of the session
    views = [e for e in events if e[2] in VIEW_TYPES]
    dwell = [g for e, g in zip(events, gaps, strict=True) if e[2] in VIEW_TYPES and g is not None]
    depths = [e[4] for e in events if e[4] is not None]
    kinds = [e[2] for e in events]
    start, end = at[0], at[-1]
    hashed = "s-" + hashlib.sha256(f"{anonymous_id}|{start}".encode()).hexdigest()[:32]
    # silver's client session id (spark_jobs.silver.sessions.client_session_id; this venv has no pyspark)
    client_text = f"{len(anonymous_id)}|{anonymous_id}|{len(client_id or '')}|{client_id}"
    session_id = hashed if client_id is None else "c-" + hashlib.sha256(client_text.encode()).hexdigest()[:32]
    return Row(
        anonymous_id, session_id, reason, start, end, len(events),
        len({e[3] for e in views if e[3] is not None}), len(views),
        sum(dwell) / len(dwell) if dwell else 0.0, float(sum(dwell)),
        float(sum(min(g, gap_cap_s) for g in gaps if g is not None)),
        max(depths) if depths else 0.0,
        kinds.count("scroll"), kinds.count("click"), kinds.count("product_view"),
        len({e[5] for e in events if e[2] == "product_view" and e[5] is not None}),
        kinds.count("cart_add"), kinds.count("wishlist_add"), kinds.count("search"),
        any(e[3] is not None and e[3].startswith("/checkout") for e in events), "purchase" in kinds,
        (end - start) / 1e6,
    )  # fmt: skip


class FirstCopy(KeyedProcessFunction):
    """Per (session_id, event_id) (the key; a missing session id is a value of its own): bronze's dedup, the
    copy received first (ties: source file, occurred_at, device), emitted once the watermark passes the latest
    event time among the copies."""

    def open(self, runtime_context):
        self.best = runtime_context.get_state(ValueStateDescriptor("first_copy", Types.PICKLED_BYTE_ARRAY()))
        self.due = runtime_context.get_state(ValueStateDescriptor("due_ms", Types.LONG()))

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        copy = tuple(value)
        best = self.best.value()
        order = (copy[5], copy[6], copy[4], copy[2])  # received_us, source_file, occurred_us, anonymous_id
        if best is None or order < (best[5], best[6], best[4], best[2]):
            self.best.update(copy)
        due, current = copy[4] // 1000, self.due.value()
        if current is None or due > current:
            if current is not None:
                ctx.timer_service().delete_event_time_timer(current)
            ctx.timer_service().register_event_time_timer(due)
            self.due.update(due)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        yield Row(*self.best.value())
        self.best.clear()
        self.due.clear()


class DeviceSessions(KeyedProcessFunction):
    """Per device (the key): silver's sessionization driven by event-time timers (see the module docstring)."""

    def __init__(self, timeout_us: int, max_length_us: int, gap_cap_s: float):
        self.timeout_us, self.max_length_us, self.gap_cap_s = timeout_us, max_length_us, gap_cap_s

    def open(self, runtime_context):
        pickled = Types.PICKLED_BYTE_ARRAY()
        self.idle = runtime_context.get_list_state(ListStateDescriptor("idle_events", pickled))
        self.client = runtime_context.get_list_state(ListStateDescriptor("client_events", pickled))
        self.idle_timer = runtime_context.get_state(ValueStateDescriptor("idle_timer_ms", Types.LONG()))
        self.client_timer = runtime_context.get_state(ValueStateDescriptor("client_timer", Types.BOOLEAN()))

    def process_element(self, value, ctx: KeyedProcessFunction.Context):
        event_id, session_id, _, event_type, occurred_us, _, _, path, scroll_depth, product_id = value
        event = (occurred_us, event_id, event_type, path, scroll_depth, product_id)
        timers = ctx.timer_service()
        if session_id is not None:  # a client session: no gap ends it, only the end of input
            self.client.add((session_id, event))
            if not self.client_timer.value():
                timers.register_event_time_timer(END_OF_INPUT_MS)
                self.client_timer.update(True)
            return
        self.idle.add(event)
        due = (occurred_us + self.timeout_us) // 1000  # the device idle for a timeout after this event
        current = self.idle_timer.value()
        if current is None or due > current:
            if current is not None:
                timers.delete_event_time_timer(current)
            timers.register_event_time_timer(due)
            self.idle_timer.update(due)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext):
        device = ctx.get_current_key()
        if timestamp == END_OF_INPUT_MS:
            by_session: dict[str, list[tuple]] = {}
            for session_id, event in self.client.get() or []:
                by_session.setdefault(session_id, []).append(event)
            for session_id, events in by_session.items():
                events.sort(key=lambda e: (e[0], e[1]))
                yield session_row(device, session_id, "client_session_id", events, self.gap_cap_s)
            self.client.clear()
            self.client_timer.clear()
            return  # the idle timer, always earlier, has fired already
        events = sorted(self.idle.get() or [], key=lambda e: (e[0], e[1]))
        self.idle.clear()
        self.idle_timer.clear()
        session: list[tuple] = []
        reason, start, last = "idle_timeout", 0, 0
        for event in events:  # the watermark passed the last event + the timeout: every run here is complete
            at = event[0]
            if session and at - last >= self.timeout_us:
                yield session_row(device, None, reason, session, self.gap_cap_s)
                session, reason = [], "idle_timeout"
            elif session and at - start >= self.max_length_us:
                yield session_row(device, None, reason, session, self.gap_cap_s)
                session, reason = [], "max_length"
            if not session:
                start = at
            session.append(event)
            last = at
        if session:
            yield session_row(device, None, reason, session, self.gap_cap_s)


def build_job(landing: Path, parallelism: int):
    """The Flink job up to its sessions, as a DataStream (collected by the caller)."""
    config = Configuration()
    config.set_string("python.executable", sys.executable)  # the workers run in this venv too
    config.set_string("python.client.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)  # why not BATCH: see the module docstring
    env.set_parallelism(parallelism)
    t_env = StreamTableEnvironment.create(env)
    files = str(landing.resolve()).replace("'", "''")
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE landing (
            line BYTES,
            source_file STRING NOT NULL METADATA FROM 'file.path' VIRTUAL
        ) WITH (
            'connector' = 'filesystem', 'path' = '{files}', 'format' = 'raw',
            'source.path.regex-pattern' = '.*\\.ndjson'
        )""")  # fmt: skip
    parse = udtf(ParseLines(Limits.from_settings(SETTINGS)), result_types=EVENT_TYPES)
    t_env.create_temporary_function("parse_lines", parse)
    columns = ", ".join(EVENT_FIELDS)
    accepted = t_env.sql_query(
        f"SELECT e.* FROM landing AS l, LATERAL TABLE(parse_lines(l.line, l.source_file)) AS e({columns})"
    )
    timeout_us = interval_seconds(SETTINGS.session_timeout) * 1_000_000
    max_length_us = interval_seconds(SETTINGS.max_session_length) * 1_000_000
    gap_cap_s = float(yaml.safe_load(SETTINGS.context_file.read_text())["engaged_gap_cap_seconds"])
    # Event time is occurred_at; the watermark is the end of the bounded input (see the module docstring).
    watermarks = WatermarkStrategy.no_watermarks().with_timestamp_assigner(OccurredAt())
    return (
        t_env.to_data_stream(accepted)
        .assign_timestamps_and_watermarks(watermarks)
        .key_by(lambda e: json.dumps([e[1], e[0]]), key_type=Types.STRING())  # session_id, event_id
        .process(FirstCopy(), output_type=Types.ROW_NAMED(list(EVENT_FIELDS), EVENT_ROW_TYPES))
        .key_by(lambda e: e[2], key_type=Types.STRING())  # anonymous_id
        .process(
            DeviceSessions(timeout_us, max_length_us, gap_cap_s),
            output_type=Types.ROW_NAMED(list(SESSION_FIELDS), list(SESSION_FIELDS.values())),
        )
    )


def main(argv: list[str]) -> int:
    landing, out = Path(argv[0]), Path(argv[1])
    parallelism = int(argv[2]) if len(argv) > 2 else os.cpu_count() or 1
    t0 = time.monotonic()
    sessions_stream = build_job(landing, parallelism)
    t1 = time.monotonic()
    with sessions_stream.execute_and_collect("intentlake flink reference") as rows:
        sessions = pd.DataFrame([tuple(row) for row in rows], columns=list(SESSION_FIELDS))
    t2 = time.monotonic()
    for name in ("start", "end"):
        sessions[f"session_{name}"] = pd.to_datetime(sessions.pop(f"session_{name}_us"), unit="us", utc=True)
    sessions.to_parquet(out, index=False)
    t3 = time.monotonic()
    print(json.dumps({"events": int(sessions["event_count"].sum()), "sessions": len(sessions),
                      "parallelism": parallelism, "seconds": {"setup": t1 - t0, "job": t2 - t1, "write": t3 - t2,
                      "total": t3 - t0}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
