"""The decision API: what to show a person now, from the online store and config/content_rules.yaml.

    GET  /api/content?user_id=…&time=…&intent_score=…   the seeds' call (query parameters)
    POST /api/personalize                                a person or anonymous id, the page, the context
    GET  /healthz                                        whether the online store answers (no key needed)
    GET  /docs, /openapi.json                            the OpenAPI description, served by the service itself

Every /api call needs a key (`X-API-Key: <key>` or `Authorization: Bearer <key>`): INTENTLAKE_API_KEYS, or
the one generated into <lakehouse>/_secrets/api_key. The answer (`Decision`) names the decision (decision_id),
says whether it used what the store knows of the person (only with their personalization consent) and gives
the content rule that won for the channel, with tone, format and CTA. A person the store does not know gets
the rules' answer for the request's own context; when the store does not answer within
INTENTLAKE_API_STORE_TIMEOUT_MS, the same, marked `degraded`, and for the next second no request waits for
it (a store that is down costs no request its timeout); bad parameters get a 400/422 naming them.

Every decision is logged as a canonical `exposure` event (schema version 4: decision id, person, rule,
content, segment, score, model version) through the collector's own path into the landing zone or Kafka,
after the answer has gone; the page's later click or dismissal carries properties.decision_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field

from spark_jobs.privacy import configured_or_generated
from spark_jobs.serving.collector import Collector, make_sink
from spark_jobs.serving.decisions import BadRequest, Decider, DecisionRequest, exposure_event
from spark_jobs.serving.online_store import IDENTIFIER, PERSON, decode, holds_data
from spark_jobs.settings import Settings

log = logging.getLogger("intentlake.api")
BREAKER_SECONDS = 1.0  # after the store fails a request, how long requests do without it


class Geo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str | None = Field(default=None, description="mobile, tablet, desktop (else from the user agent)")
    user_agent: str | None = None


class Page(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, description="the page's URL; its q= / query= / search= is the search")
    path: str | None = None
    search: str | None = Field(default=None, description="what the person searches for, if the page knows")


class Context(BaseModel):
    model_config = ConfigDict(extra="forbid")
    local_time: str | None = Field(default=None, description="ISO 8601 with offset, or local 'HH:MM'")
    timezone: str | None = Field(default=None, description="IANA zone of the device")
    geo: Geo | None = None
    ip: str | None = None
    device: Device | None = None


class PersonalizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(default=None, max_length=256)
    anonymous_id: str | None = Field(default=None, max_length=256)
    channel: str = "web"
    page: Page | None = None
    context: Context | None = None


class Content(BaseModel):
    rule: str
    priority: int
    tone: str
    format: str
    cta: str


class Decision(BaseModel):
    decision_id: str = Field(description="names this decision: exposures and clicks that follow carry it")
    person_id: str | None = Field(description="the person the ids resolved to (null unless personalized)")
    personalized: bool = Field(description="whether what the store knows of the person was used (their consent)")
    basis: str = Field(description="what the decision rests on, and why not more")
    segment: str | None
    intent_score: float | None
    contributions: dict[str, float]
    model_version: str | None
    best_local_hour: int | None
    channel: str
    content: Content | None
    rules_version: str
    context: dict[str, Any] = Field(description="the request context the rules saw")
    unevaluable_rules: list[str]
    degraded: bool = Field(description="true when the online store did not answer in time")


class Store:
    """The online store as the API reads it: ids to person, person to record; a circuit breaker around it."""

    def __init__(self, settings: Settings) -> None:
        import redis.asyncio as aioredis

        self.prefix = settings.redis_prefix
        timeout = settings.api_store_timeout_ms / 1000
        self.redis = None
        if settings.redis_url:
            self.redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=timeout,
                                                 socket_connect_timeout=timeout, max_connections=64)  # fmt: skip
        self.open_until = 0.0

    async def lookup(self, user_id: str | None, anonymous_id: str | None) -> tuple[dict | None, str | None, str | None]:
        """(record, person_id, why degraded): the login id first, then the anonymous id."""
        if self.redis is None:
            return None, None, "no online store configured"
        if time.monotonic() < self.open_until:
            return None, None, "online store unavailable"
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for kind, value in (("user_id", user_id), ("anonymous_id", anonymous_id)):
                    if value:
                        pipe.hget(f"{self.prefix}{IDENTIFIER}{kind}:{value}", "person_id")
                found = [p for p in await pipe.execute() if p]
            if not found:
                return None, None, None
            raw = await self.redis.hgetall(self.prefix + PERSON + found[0])
        except Exception as exc:  # timeouts, refused connections, a server going away: answer without the store
            if time.monotonic() >= self.open_until:
                log.warning("online store unavailable (%s); answering without it for %.0f s", type(exc).__name__,
                            BREAKER_SECONDS)  # fmt: skip
            self.open_until = time.monotonic() + BREAKER_SECONDS
            return None, None, "online store unavailable"
        if not holds_data(raw):
            return None, found[0], None
        return decode(raw), found[0], None

    async def ping(self) -> bool:
        if self.redis is None:
            return False
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False


def api_keys(settings: Settings) -> tuple[str, ...]:
    """The keys a caller may send: INTENTLAKE_API_KEYS, else the one generated into <lakehouse>/_secrets/api_key."""
    return configured_or_generated(settings.api_keys, key_file(settings))


def key_file(settings: Settings):
    return settings.lakehouse / "_secrets" / "api_key"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app (uvicorn serves it: `intentlake serve api`)."""
    settings = settings or Settings.from_env()
    decider = Decider.load(settings)
    keys = tuple(k.encode() for k in api_keys(settings))
    store = Store(settings)
    # every decision is logged as an exposure event through the collector's own path (checked by bronze's
    # parser, then the landing zone or Kafka), off the answer's path: a second's group per landing file
    exposures = Collector(settings, make_sink(settings, linger_seconds=1.0))
    logged = {"exposures_logged": 0, "exposures_failed": 0}
    in_flight: set[asyncio.Task] = set()

    async def log_exposure(event: dict[str, Any]) -> None:
        try:
            await exposures.accept(
                [(json.dumps(event, separators=(",", ":")), event)], exposures.limits.max_record_bytes
            )
            logged["exposures_logged"] += 1
        except Exception as exc:  # the answer has gone; the failure is counted (/healthz) and logged
            logged["exposures_failed"] += 1
            log.warning("an exposure could not be logged: %s", exc)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await exposures.sink.start()
        yield
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        await exposures.sink.stop()

    # the docs pages (/docs, /redoc) with their scripts served from the package, not a CDN
    app = FastAPIOffline(title="intentlake decision API", version="1", description=__doc__.split("\n\n", 2)[2],
                         lifespan=lifespan)  # fmt: skip

    def authorised(x_api_key: Annotated[str | None, Header()] = None,
                   authorization: Annotated[str | None, Header()] = None) -> None:  # fmt: skip
        given = x_api_key or (authorization.removeprefix("Bearer ").strip() if authorization else None)
        if not given:
            raise HTTPException(401, "an API key is required: X-API-Key or Authorization: Bearer",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        if not any(hmac.compare_digest(given.encode(), key) for key in keys):
            raise HTTPException(401, "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    async def decide(request: DecisionRequest) -> dict[str, Any]:
        request.check(decider.rules.live_channels)  # before the store: a bad request costs it nothing
        record, person_id, degraded = await store.lookup(request.user_id, request.anonymous_id)
        now = datetime.now(UTC)
        decision = decider.decide(record, request, now, person_id, degraded)
        task = asyncio.create_task(log_exposure(exposure_event(decision, request, now)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        return decision

    @app.get("/api/content", response_model=Decision, dependencies=[Depends(authorised)])
    async def content(
        user_id: Annotated[str | None, Query(max_length=256)] = None,
        anonymous_id: Annotated[str | None, Query(max_length=256)] = None,
        time: Annotated[str | None, Query(description="local 'HH:MM' or ISO 8601 with offset")] = None,
        intent_score: Annotated[
            float | None, Query(ge=0, le=100, description="used only if the store has none")
        ] = None,
        channel: str = "web",
        timezone: str | None = None,
        lat: Annotated[float | None, Query(ge=-90, le=90)] = None,
        lon: Annotated[float | None, Query(ge=-180, le=180)] = None,
        q: Annotated[str | None, Query(max_length=512, description="what the person searches for")] = None,
        device_type: str | None = None,
    ) -> dict[str, Any]:
        """The seeds' call: content for a person at a local time (the score from the store, else the page's)."""
        return await decide(DecisionRequest(user_id=user_id, anonymous_id=anonymous_id, channel=channel,
                                            local_time=time, timezone=timezone, lat=lat, lon=lon,
                                            device_type=device_type, search_query=q,
                                            intent_score=intent_score))  # fmt: skip

    @app.post("/api/personalize", response_model=Decision, dependencies=[Depends(authorised)])
    async def personalize(body: PersonalizeRequest) -> dict[str, Any]:
        """What to show on this page now: segment, score with its contributions, and the content pick."""
        context, page = body.context or Context(), body.page or Page()
        device = context.device or Device()
        return await decide(DecisionRequest(
            user_id=body.user_id, anonymous_id=body.anonymous_id, channel=body.channel,
            local_time=context.local_time, timezone=context.timezone,
            lat=context.geo.lat if context.geo else None, lon=context.geo.lon if context.geo else None,
            ip=context.ip, user_agent=device.user_agent, device_type=device.type, page_url=page.url,
            search_query=page.search,
        ))  # fmt: skip

    @app.get("/healthz")
    async def health() -> dict[str, Any]:
        """Whether the online store answers (the API answers either way)."""
        return {"api": "up", "store": "up" if await store.ping() else "down", "rules_version": decider.rules.version,
                **logged}  # fmt: skip

    return app
