"""`make serve` (scripts/serve.sh) as a user runs it: Redis, the collector, the decision API and the streaming
jobs start on loopback; events sent to the collector go through bronze, silver and gold into the online store
within the pipeline's cycles, and the decision API then answers from them; Ctrl-C (SIGINT) stops everything.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from spark_jobs.settings import REPO_ROOT

pytestmark = pytest.mark.integration


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _call(url: str, body: dict | None = None, headers: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def _until(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what} within {seconds:.0f} s")


def test_make_serve_runs_the_live_side_and_ctrl_c_stops_it_all(tmp_path):
    ports = {"collector": _port(), "api": _port(), "redis": _port()}
    lakehouse = tmp_path / "lakehouse"
    env = {**os.environ, "INTENTLAKE_LAKEHOUSE": str(lakehouse), "INTENTLAKE_COLLECTOR_PORT": str(ports["collector"]),
           "INTENTLAKE_API_PORT": str(ports["api"]), "INTENTLAKE_REDIS_PORT": str(ports["redis"]),
           "INTENTLAKE_REDIS_DIR": str(tmp_path / "redis"), "INTENTLAKE_TRIGGER": "2 seconds",
           "INTENTLAKE_SHUFFLE_PARTITIONS": "2", "INTENTLAKE_COLLECTOR_WRITE_KEYS": "wk-serve-0123456789",
           "INTENTLAKE_API_KEYS": "api-serve-0123456789", "INTENTLAKE_MAX_EVENT_AGE": "3650 days"}  # fmt: skip
    env.pop("INTENTLAKE_REDIS_URL", None)
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([str(REPO_ROOT / "scripts" / "serve.sh")], env=env, cwd=REPO_ROOT, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        collector, api = f"http://127.0.0.1:{ports['collector']}", f"http://127.0.0.1:{ports['api']}"
        _until(lambda: _call(f"{collector}/healthz")["collector"] == "up", 120, "the collector did not answer")
        _until(lambda: _call(f"{api}/healthz")["store"] == "up", 120, "the API did not answer with its store")
        auth = {"Authorization": "Basic " + base64.b64encode(b"wk-serve-0123456789:").decode()}
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        views = [{"type": "track", "event": "Product Viewed", "anonymousId": "dress-fan", "userId": "u-dress",
                  "messageId": f"v-{i}", "timestamp": now, "properties": {"product_id": f"dress-{i}"},
                  "context": {"consent": {"categoryPreferences": {"personalization": True}},
                              "page": {"url": f"https://shop.example/p/dress-{i}", "path": f"/p/dress-{i}"}}}
                 for i in range(3)]  # fmt: skip
        assert _call(f"{collector}/v1/batch", {"batch": views}, auth)["accepted"] == 3
        key = {"X-API-Key": "api-serve-0123456789"}
        answer = _until(lambda: (a := _call(f"{api}/api/content?user_id=u-dress", headers=key))["segment"] and a,
                        240, "the collected events did not reach the API through gold and the store")  # fmt: skip
        assert answer["personalized"] and answer["intent_score"] > 0 and answer["contributions"]["product_views"] > 0
    finally:
        os.killpg(serve.pid, signal.SIGINT)  # Ctrl-C in the terminal: the whole foreground group
        code = serve.wait(timeout=120)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, output[-3000:]
    assert f"collector     http://127.0.0.1:{ports['collector']}" in output and "redis: stopped" in output
    for port in ports.values():
        with socket.socket() as probe:  # nothing listens any more
            assert probe.connect_ex(("127.0.0.1", port)) != 0, output[-2000:]
