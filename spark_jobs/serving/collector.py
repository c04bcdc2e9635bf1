"""The event collector: Segment's HTTP Tracking API, and every other format bronze knows, in front of the stream.

    POST /v1/track /v1/page /v1/screen /v1/identify /v1/alias   one Segment message (its type from the path)
    POST /v1/batch                                              Segment's batch envelope
    POST /v1/events                                             any format bronze reads: NDJSON, a JSON array
                                                                or one object (Snowplow, web/mobile SDK, ...)

Authentication is Segment's: the write key as the HTTP Basic user name (or `writeKey` in the body), checked
against INTENTLAKE_COLLECTOR_WRITE_KEYS (else a key generated into <lakehouse>/_secrets/write_key). Limits
are Segment's: 32 KB per message and 500 KB per request (a record of /v1/events may be as large as bronze
takes, INTENTLAKE_MAX_RECORD_BYTES, within the request's limit).

Every event goes through bronze's own parser (`bronze.normalize.normalize_object`, with bronze's limits,
schema registry and vocabulary): one code path, no second parser. A request with an event bronze would
quarantine is refused whole with a 400 that lists each bad event's index, reason and the field it names,
and nothing of it is written; a good request is acknowledged (200) only once all its events are durable:
acknowledged by Kafka with acks=all from an idempotent producer (INTENTLAKE_COLLECTOR_SINK=kafka), or
written, fsynced and renamed into the landing zone as one new file per group of requests (the default).
What is written is the raw record, as bronze reads it from a file or the topic. A sink that cannot keep up
(INTENTLAKE_COLLECTOR_MAX_PENDING events waiting) answers 503 with Retry-After, as does a full disk or a
broker that does not acknowledge in time: the event was not taken, and the sender's retry is safe (bronze
drops a repeated event id).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hmac
import json
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from spark_jobs.bronze.normalize import (
    Limits,
    RejectedEvent,
    SchemaRegistry,
    is_segment_batch,
    normalize_object,
)
from spark_jobs.bronze.vocabulary import vocabulary_at
from spark_jobs.privacy import configured_or_generated
from spark_jobs.settings import Settings

log = logging.getLogger("intentlake.collector")
SEGMENT_TYPES = ("track", "page", "screen", "identify", "alias")
MAX_MESSAGE_BYTES = 32 * 1024  # Segment's HTTP API: per message
MAX_REQUEST_BYTES = 500 * 1024  # ... and per request (a batch)


class SinkUnavailable(RuntimeError):
    """The sink did not take the events (full disk, broker not acknowledging, too much waiting); the message
    says which. The request is answered 503: nothing was acknowledged."""


class LandingSink:
    """Group commit into the landing zone: requests that arrive together share one new file, written under a
    hidden name (Spark's file source skips names starting with '.'), fsynced, renamed to collector-*.ndjson
    and the directory fsynced; then every request in the group is acknowledged."""

    def __init__(self, folder: Path, linger_seconds: float = 0.005) -> None:
        self.folder, self.linger = folder, linger_seconds
        self.pending: list[tuple[list[str], asyncio.Future]] = []
        self.waiting = 0  # events accepted but not yet durable
        self.sequence = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._flush()  # whatever was handed over still gets written (or its senders told it was not)

    async def write(self, lines: list[str], keys: list[str | None]) -> None:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((lines, future))
        self.waiting += len(lines)
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.linger)  # let the requests arriving meanwhile share the file
            await self._flush()

    async def _flush(self) -> None:
        group, self.pending = self.pending, []
        if not group:
            return
        lines = [line for request, _ in group for line in request]
        try:
            await asyncio.to_thread(self._write_file, lines)
            outcome: BaseException | None = None
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            outcome = SinkUnavailable(f"the landing zone {'is full' if full else 'cannot be written'}: "
                                      f"{exc.strerror or exc}")  # fmt: skip
        self.waiting -= len(lines)
        for _, future in group:
            if not future.done():
                future.set_result(None) if outcome is None else future.set_exception(outcome)

    def _write_file(self, lines: list[str]) -> Path:
        self.sequence += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        final = self.folder / f"collector-{stamp}-{os.getpid()}-{self.sequence:06d}.ndjson"
        temp = self.folder / f".{final.name}.tmp"
        try:
            with open(temp, "w", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.rename(temp, final)
        except OSError:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
        return final


def producer_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings for the collector's producer: the broker and security settings bronze's reader
    uses, plus durability (acks=all, idempotence: a retried send is not written twice)."""
    from spark_jobs.settings import parse_kafka_options

    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 2,
        "message.timeout.ms": 30_000,  # a broker that does not acknowledge in time: 503, not a hung request
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        config.update({"sasl.mechanism": settings.kafka_sasl_mechanism, "sasl.username": settings.kafka_sasl_username,
                       "sasl.password": settings.kafka_sasl_password})  # fmt: skip
    if settings.kafka_security_protocol.endswith("SSL") and settings.kafka_ssl_truststore_location:
        if settings.kafka_ssl_truststore_type != "PEM":
            raise SinkUnavailable("the collector's Kafka client reads a PEM CA file: set "
                                  "INTENTLAKE_KAFKA_SSL_TRUSTSTORE_TYPE=PEM and point the location at it")  # fmt: skip
        config["ssl.ca.location"] = settings.kafka_ssl_truststore_location
    config.update(parse_kafka_options(settings.kafka_options))
    return config


class KafkaSink:
    """An idempotent producer (acks=all); a request is acknowledged once the broker has every one of its
    events. Delivery reports are served by a thread of their own."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import Producer

        self.topic = settings.kafka_topic
        self.producer = Producer(producer_config(settings))
        self.waiting = 0
        self._running = True
        self._poller = threading.Thread(target=self._poll, name="collector-kafka-poll", daemon=True)

    async def start(self) -> None:
        self._poller.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.producer.flush, 30)
        self._running = False

    def _poll(self) -> None:
        while self._running:
            self.producer.poll(0.05)

    async def write(self, lines: list[str], keys: list[str | None]) -> None:
        loop = asyncio.get_running_loop()
        futures = []

        def settle(future: asyncio.Future, error: Any) -> None:
            self.waiting -= 1
            if future.done():
                return
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(SinkUnavailable(f"Kafka did not acknowledge the event: {error}"))

        for line, key in zip(lines, keys, strict=True):
            future = loop.create_future()
            futures.append(future)
            try:
                self.producer.produce(self.topic, value=line.encode("utf-8"), key=key.encode() if key else None,
                                      on_delivery=_reporter(loop, settle, future))  # fmt: skip
            except BufferError:
                future.cancel()
                raise SinkUnavailable("the Kafka producer's queue is full: the broker is not keeping up") from None
            self.waiting += 1
        await asyncio.gather(*futures)


def _reporter(loop: asyncio.AbstractEventLoop, settle: Any, future: asyncio.Future) -> Any:
    """A delivery callback (run on the poll thread) that settles the future on the event loop."""
    return lambda error, message: loop.call_soon_threadsafe(settle, future, error)


class Rejected(Exception):
    """A request refused whole: the status and, per bad event, its index, reason and detail."""

    def __init__(self, status: int, errors: list[dict]) -> None:
        super().__init__(errors)
        self.status, self.errors = status, errors

    @classmethod
    def one(cls, reason: str, detail: str, index: int | None = None, status: int = 400) -> Rejected:
        return cls(status, [{"index": index, "reason": reason, "detail": detail}])


class Collector:
    """What both the HTTP endpoints and our own services (decision exposures) call to put events on the stream."""

    def __init__(self, settings: Settings, sink: LandingSink | KafkaSink) -> None:
        self.settings, self.sink = settings, sink
        self.limits = Limits.from_settings(settings)
        self.registry = SchemaRegistry.load(settings.schema_dir)
        self.vocabulary = vocabulary_at(settings.event_vocabulary_file)
        self.max_pending = settings.collector_max_pending
        self.accepted = 0

    def check(self, records: list[tuple[str, Any]], max_bytes: int) -> list[tuple[str, dict]]:
        """(raw line, parsed object) -> (raw line, canonical event) for each, or Rejected listing every bad one."""
        errors, events = [], []
        for index, (raw, obj) in enumerate(records):
            size = len(raw.encode("utf-8"))
            if size > max_bytes:
                errors.append({"index": index, "reason": "oversize_record",
                               "detail": f"event is {size:,} bytes; the limit is {max_bytes:,}"})  # fmt: skip
                continue
            try:
                events.append((raw, normalize_object(obj, self.limits, self.registry, self.vocabulary)))
            except RejectedEvent as rejected:
                errors.append({"index": index, "reason": str(rejected.reason), "detail": rejected.detail})
        if errors:
            raise Rejected(400, errors)
        return events

    async def accept(self, records: list[tuple[str, Any]], max_bytes: int) -> int:
        """Check every record, then hand them to the sink; returns once they are durable."""
        events = self.check(records, max_bytes)
        if self.sink.waiting + len(events) > self.max_pending:
            raise SinkUnavailable(f"the collector is busy: {self.sink.waiting:,} events are waiting for the sink")
        keys = [e.get("anonymous_id") or e.get("user_id") for _, e in events]  # a device's events in order
        await self.sink.write([raw for raw, _ in events], keys)
        self.accepted += len(events)
        return len(events)


def write_keys(settings: Settings) -> tuple[str, ...]:
    return configured_or_generated(settings.collector_write_keys, write_key_file(settings))


def write_key_file(settings: Settings) -> Path:
    return settings.lakehouse / "_secrets" / "write_key"


def make_sink(settings: Settings, linger_seconds: float = 0.005) -> LandingSink | KafkaSink:
    """The configured sink; `linger_seconds`: how long a landing-zone group waits for more requests (one
    file per group: a longer wait, fewer and larger files, later acknowledgements)."""
    if settings.collector_sink == "kafka":
        return KafkaSink(settings)
    return LandingSink(settings.landing, linger_seconds)


def _json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Rejected.one("malformed_json", f"{what}: not valid JSON ({exc})"[:200], 0) from None


def _message_id(message: dict) -> None:
    """A Segment message without a messageId gets one here, as Segment's own API assigns it (its libraries
    always send one, which is what makes a sender's retry safe: bronze stores an event id once)."""
    if message.get("messageId") in (None, ""):
        message["messageId"] = f"collector-{uuid.uuid4()}"


def _messages(envelope: dict) -> list[tuple[str, Any]]:
    """A Segment batch envelope -> its messages, each with the envelope's context and sentAt (as bronze's
    normalize_records splits one), each its own raw line."""
    if not isinstance(envelope.get("batch"), list) or not envelope["batch"]:
        raise Rejected.one("schema_violation", "batch: a non-empty list of Segment messages is required")
    shared = {k: envelope[k] for k in ("context", "sentAt") if k in envelope}
    records = []
    for message in envelope["batch"]:
        if isinstance(message, dict):
            context = {**(shared.get("context") or {}), **(message.get("context") or {})}
            message = {**shared, **message, **({"context": context} if context else {})}
            message.pop("writeKey", None)
            _message_id(message)
        records.append((json.dumps(message, separators=(",", ":")), message))
    return records


def create_app(settings: Settings | None = None, sink: LandingSink | KafkaSink | None = None) -> FastAPI:
    """The collector's ASGI app (`intentlake serve collector`)."""
    settings = settings or Settings.from_env()
    collector = Collector(settings, sink or make_sink(settings))
    keys = tuple(k.encode() for k in write_keys(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await collector.sink.start()
        yield
        await collector.sink.stop()

    app = FastAPIOffline(title="intentlake collector", version="1", lifespan=lifespan,
                         description=__doc__.split("\n\n", 2)[2])  # fmt: skip
    app.state.collector = collector

    def authorised(request: Request, body: Any) -> None:
        given = None
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                given = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")[0]
        if not given and isinstance(body, dict) and isinstance(body.get("writeKey"), str):
            given = body["writeKey"]
        if not given:
            raise HTTPException(401, "a write key is required: HTTP Basic with the write key as the user name",
                                headers={"WWW-Authenticate": 'Basic realm="intentlake"'})  # fmt: skip
        if not any(hmac.compare_digest(given.encode(), key) for key in keys):
            raise HTTPException(
                401, "the write key is not valid", headers={"WWW-Authenticate": 'Basic realm="intentlake"'}
            )

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_REQUEST_BYTES:
            limit = f"request is {int(declared):,} bytes; the limit is {MAX_REQUEST_BYTES:,}"
            raise Rejected.one("oversize_request", limit, status=413)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_REQUEST_BYTES:
                limit = f"request is over the limit of {MAX_REQUEST_BYTES:,} bytes"
                raise Rejected.one("oversize_request", limit, status=413)
        return raw

    @app.exception_handler(Rejected)
    async def rejected(request: Request, exc: Rejected) -> JSONResponse:
        return JSONResponse({"success": False, "errors": exc.errors}, status_code=exc.status)

    @app.exception_handler(SinkUnavailable)
    async def unavailable(request: Request, exc: SinkUnavailable) -> JSONResponse:
        log.warning("events refused: %s", exc)
        errors = [{"index": None, "reason": "unavailable", "detail": str(exc)}]
        return JSONResponse({"success": False, "errors": errors}, status_code=503, headers={"Retry-After": "1"})

    async def segment(request: Request, kind: str) -> dict[str, Any]:
        raw = await body_of(request)
        obj = _json(raw, "body")
        authorised(request, obj)
        if not isinstance(obj, dict):
            raise Rejected.one("not_an_object", "expected a JSON object", 0)
        obj.pop("writeKey", None)  # a secret: never written to the stream
        _message_id(obj)
        if obj.setdefault("type", kind) != kind:
            raise Rejected.one("schema_violation", f"type: a /v1/{kind} call carries type {kind!r}", 0)
        line = json.dumps(obj, separators=(",", ":"))
        return {"success": True, "accepted": await collector.accept([(line, obj)], MAX_MESSAGE_BYTES)}

    for kind in SEGMENT_TYPES:

        async def endpoint(request: Request, kind: str = kind) -> dict[str, Any]:
            return await segment(request, kind)

        endpoint.__doc__ = f"A Segment `{kind}` call (its type may be left out)."
        app.post(f"/v1/{kind}", name=kind)(endpoint)

    @app.post("/v1/batch")
    async def batch(request: Request) -> dict[str, Any]:
        """Segment's batch envelope: `batch` (the messages), and `context` / `sentAt` shared by them."""
        obj = _json(await body_of(request), "body")
        authorised(request, obj)
        if not is_segment_batch(obj):
            raise Rejected.one("schema_violation", "batch: a non-empty list of Segment messages is required")
        records = _messages(obj)
        return {"success": True, "accepted": await collector.accept(records, MAX_MESSAGE_BYTES)}

    @app.post("/v1/events")
    async def events(request: Request) -> dict[str, Any]:
        """Any format bronze reads, as NDJSON (one record a line), a JSON array or one object."""
        raw = await body_of(request)
        authorised(request, None)
        try:
            stripped = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise Rejected.one("invalid_encoding", f"byte {exc.start} is not valid UTF-8") from None
        if stripped.startswith("["):
            items = _json(raw, "body")
        else:
            items = []
            for number, line in enumerate(line for line in stripped.splitlines() if line.strip()):
                try:
                    items.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    detail = f"line {number + 1}: not valid JSON ({exc})"[:200]
                    raise Rejected.one("malformed_json", detail, number) from None
        records = []
        for item in items:  # a Segment batch envelope among them is its messages, as bronze reads it
            records += _messages(item) if is_segment_batch(item) else [(json.dumps(item, separators=(",", ":")), item)]
        if not records:
            raise Rejected.one("schema_violation", "no events in the body")
        return {"success": True, "accepted": await collector.accept(records, collector.limits.max_record_bytes)}

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        return {"collector": "up", "sink": settings.collector_sink, "waiting": collector.sink.waiting,
                "accepted": collector.accepted}  # fmt: skip

    return app
