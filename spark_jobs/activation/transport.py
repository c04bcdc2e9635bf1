"""HTTP to a destination the way its vendor asks for it: a request rate that never exceeds the
configured limit, 429 answered by waiting what Retry-After says, 5xx and timeouts retried with capped
exponential backoff and jitter, and auth failures stopping the destination at once.

The limiter is a token bucket per destination, with no burst by default: requests leave at least
1/rate seconds apart, so no window of the vendor's (100 per 10 s, 3,000 per 3 s) ever sees more than the
configured rate allows, whatever the window's alignment. `Transport.stats` counts what happened for the
sync report. Tokens travel only in headers and are never part of an exception message or a log line.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


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
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None
    stats: TransportStats = field(default_factory=TransportStats)

    def __post_init__(self) -> None:
        self._bucket = TokenBucket(self.rate, sleep=self.sleep)
        self._client = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.policy.timeout_seconds)
        self._rng = random.Random(self.seed)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, json: object = None, content: bytes | None = None, headers=None
    ) -> httpx.Response:
        """Send once the limiter allows; retry 429 / 5xx / timeouts; return any other answer (2xx, 4xx)."""
        problem = ""
        for attempt in range(1, self.policy.max_tries + 1):
            self.stats.count(waited_seconds=self._bucket.acquire())
            self.stats.count(requests=1)
            try:
                response = self._client.request(method, path, json=json, content=content, headers=headers)
            except httpx.TimeoutException:
                self.stats.count(timeouts=1)
                problem = f"no answer within {self.policy.timeout_seconds:g} s"
                wait = self.policy.backoff(attempt, self._rng)
            except httpx.TransportError as exc:
                self.stats.count(server_errors=1)
                problem = f"connection failed ({type(exc).__name__})"
                wait = self.policy.backoff(attempt, self._rng)
            else:
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
