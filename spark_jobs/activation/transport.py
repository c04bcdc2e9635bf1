"""HTTP to a destination the way its vendor asks for it: a request rate that never exceeds the
configured limit, 429 answered by waiting what Retry-After says, 5xx and timeouts retried with capped
exponential backoff and jitter, and auth failures stopping the destination at once.

The limiter is a token bucket per destination: requests leave 1/rate seconds apart on average, and at
most `burst` back to back, which only happens to catch up on time a sender lost (a sleep that woke late, a
thread waiting for the interpreter lock). Any window of T seconds therefore sees at most rate * T + burst - 1
requests, whatever its alignment; a destination's defaults keep that within the vendor's window (Braze: 990/s
with a burst of 10 is at most 2,979 requests in any 3 s, under its 3,000). With a burst of 1 the requests are
evenly spaced, and a late wake-up is lost time: 85 % of a 1,000/s rate on an idle interpreter, a third of it
beside a busy thread (bench/sync.py). `Transport.stats` counts what happened for the sync report. Tokens
travel only in headers and are never part of an exception message or a log line.

HTTP is urllib3's thread-safe connection pool: it costs about half the CPU per request of httpx's client
(0.75 against 1.36 ms for a 75-object Braze request here), and at 1,000 requests/s the sending thread's CPU
is what limits a sync.
"""

from __future__ import annotations

import json as jsonlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import urllib3


class DestinationError(RuntimeError):
    """A destination cannot take the sync now; the message says which and why (never the token)."""


class DestinationAuthError(DestinationError):
    """The destination refused the credentials (401/403): the sync of it stops, its state is left as is."""


class DestinationUnavailable(DestinationError):
    """Retries ran out (429s, 5xx, timeouts): the records of the request are not acknowledged."""


class TokenBucket:
    """At most `rate` acquisitions per second on average, and at most `burst` at once (default 1: evenly
    spaced)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else 1.0)
        self._clock, self._sleep = clock, sleep
        self._tokens = 1.0  # a cold start sends one request, not a whole second's burst
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, waiting for it if needed; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1.0 - 1e-9:  # (float rounding must not leave it a hair short forever)
                    self._tokens -= 1.0
                    return waited
                shortfall = (1.0 - self._tokens) / self.rate
            self._sleep(shortfall)
            waited += shortfall


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a request that got a 429, a 5xx or no answer."""

    max_tries: int = 6
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    timeout_seconds: float = 15.0
    max_retry_after_seconds: float = 300.0  # a longer Retry-After stops the run instead of sleeping it

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]."""
        return rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class Response:
    """A destination's answer, read whole."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> object:
        return jsonlib.loads(self.content)


@dataclass
class TransportStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0  # 429 answers
    server_errors: int = 0
    timeouts: int = 0
    waited_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, **deltas: float) -> None:
        """Add to the counters (requests may be in flight on several threads)."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)


@dataclass
class Transport:
    """Requests to one destination's base URL, limited and retried as the module doc says."""

    name: str
    base_url: str
    headers: dict[str, str]
    rate: float
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    burst: int = 1
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None
    stats: TransportStats = field(default_factory=TransportStats)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.rate, self.burst, sleep=self.sleep)
        # no retries or redirects of urllib3's own: this class decides what is retried, and counts it
        self._pool = urllib3.PoolManager(
            num_pools=2, maxsize=8, retries=False, timeout=urllib3.Timeout(total=self.policy.timeout_seconds)
        )
        self._rng = random.Random(self.seed)

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, json: object = None, content: bytes | None = None, headers=None
    ) -> Response:
        """Send once the limiter allows; retry 429 / 5xx / timeouts; return any other answer (2xx, 4xx)."""
        url = self.base_url.rstrip("/") + path if path else self.base_url
        sent_headers = {**self.headers, **(headers or {})}
        if json is not None:
            content = jsonlib.dumps(json, separators=(",", ":")).encode()
            sent_headers.setdefault("Content-Type", "application/json")
        problem = ""
        for attempt in range(1, self.policy.max_tries + 1):
            self.stats.count(waited_seconds=self._bucket.acquire())
            self.stats.count(requests=1)
            try:
                answer = self._pool.request(method, url, body=content, headers=sent_headers)
            except urllib3.exceptions.TimeoutError:
                self.stats.count(timeouts=1)
                problem = f"no answer within {self.policy.timeout_seconds:g} s"
                wait = self.policy.backoff(attempt, self._rng)
            except urllib3.exceptions.HTTPError as exc:
                self.stats.count(server_errors=1)
                problem = f"connection failed ({type(exc).__name__})"
                wait = self.policy.backoff(attempt, self._rng)
            else:
                response = Response(answer.status, answer.headers, answer.data)
                status = response.status_code
                if status in (401, 403):
                    raise DestinationAuthError(
                        f"{self.name}: {method} {path} was refused with {status}: check the token in "
                        f"INTENTLAKE_DEST_{self.name.upper()}_TOKEN (and its scopes); nothing was synced past here"
                    )
                if status == 429:
                    self.stats.count(throttled=1)
                    asked = retry_after_seconds(response.headers.get("Retry-After"))
                    if asked is not None and asked > self.policy.max_retry_after_seconds:
                        raise DestinationUnavailable(
                            f"{self.name}: rate limited with Retry-After {asked:g} s (over the "
                            f"{self.policy.max_retry_after_seconds:g} s this run waits); sync again later"
                        )
                    problem = "429 Too Many Requests"
                    wait = asked if asked is not None else self.policy.backoff(attempt, self._rng)
                elif status >= 500:
                    self.stats.count(server_errors=1)
                    problem = f"{status} from the server"
                    wait = self.policy.backoff(attempt, self._rng)
                else:
                    return response
            if attempt < self.policy.max_tries:
                self.stats.count(retries=1)
                self.stats.count(waited_seconds=wait)
                self.sleep(wait)
        raise DestinationUnavailable(f"{self.name}: {method} {path}: {problem}, {self.policy.max_tries} tries")
