"""Local HTTP servers on loopback that behave as the destinations' APIs do, for the sync tests.

`ContractServer` is the common part: it checks the auth header the vendor asks for, enforces a request
rate the way the vendor does (429, with Retry-After when the vendor sends one), can be told to answer
the next requests with a 429 burst, 5xx or a stall longer than the client's timeout, and logs every
request it accepted (with its arrival time) for the tests to check. Vendor servers (subclasses) add the
endpoints and their documented limits and per-record errors.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    """What to answer instead of the real thing: status 429/5xx (with Retry-After seconds) or a stall."""

    status: int = 0
    retry_after: str | None = None
    stall_seconds: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    body: object
    at: float  # time.monotonic() on arrival
    headers: dict[str, str]


class ContractServer:
    """Serve `handle(method, path, body, headers) -> (status, body, headers)` on 127.0.0.1."""

    def __init__(self, token: str, rate_limit: tuple[int, float] | None = None) -> None:
        self.token = token
        self.rate_limit = rate_limit  # (requests, per seconds): more in any window is answered with 429
        self.faults: deque[Fault] = deque()
        self.received: list[Received] = []  # accepted requests (auth passed, not throttled, not faulted)
        self.refused: list[tuple[str, int]] = []  # (path, status) of every request answered otherwise
        self._arrivals: deque[float] = deque()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body, headers = server._dispatch(method, self.path, raw, dict(self.headers.items()))
                payload = b"" if body is None else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    if payload:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def log_message(self, *args: object) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what subclasses override
    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("Authorization") == f"Bearer {self.token}"

    def throttled(self) -> tuple[int, object, dict[str, str]]:
        """The vendor's answer to a request over its rate limit."""
        return 429, {"message": "rate limit exceeded"}, {"Retry-After": "1"}

    def handle(self, method: str, path: str, body: object, headers: dict[str, str]) -> tuple[int, object, dict]:
        return 404, {"message": f"no such endpoint {method} {path}"}, {}

    # -- the common part
    def _dispatch(self, method: str, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, object, dict]:
        now = time.monotonic()
        with self._lock:
            if not self.authorized(headers):
                self.refused.append((path, 401))
                return 401, {"message": "authentication credentials not valid"}, {}
            fault = self.faults.popleft() if self.faults else None
            if fault is None and self.rate_limit is not None:
                limit, window = self.rate_limit
                while self._arrivals and self._arrivals[0] <= now - window:
                    self._arrivals.popleft()
                if len(self._arrivals) >= limit:
                    self.refused.append((path, 429))
                    return self.throttled()
                self._arrivals.append(now)
        if fault is not None:
            if fault.stall_seconds:
                time.sleep(fault.stall_seconds)
                self.refused.append((path, 0))
                return 503, None, {}
            self.refused.append((path, fault.status))
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, {"message": "injected"}, headers
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return 400, {"message": "body is not JSON"}, {}
        with self._lock:
            self.received.append(Received(method, path, body, now, headers))
            return self.handle(method, path, body, headers)
