"""The serving side under load on loopback: the decision API and the collector, each next to its floor.

    .venv/bin/python bench/serving.py [--api-rates 1000,5000] [--collector-rates 20,100] [--seconds 10]

A real Redis (scripts/redis.sh) holds `--persons` persons written by the online store's own writer; the decision
API and the collector run as `intentlake serve api|collector` (one uvicorn process each, as `make serve` runs
them) and vegeta (a Go load generator, installed once into .cache/bin from the Go module proxy) sends requests
at a constant rate:

- decision API: GET /api/content?user_id=<a random known person>&time=19:05 at each of --api-rates requests/s;
  latency p50/p95/p99/max and the share answered 200, next to a plain Redis GET measured in the same run by
  redis-benchmark (the floor any answer that reads the store pays), and the ratio;
- collector: POST /v1/batch of 100 Segment track messages at each of --collector-rates requests/s into the
  landing zone (events/s accepted, acknowledgement p50/p99), next to writing the same lines to a file and
  fsyncing it once per request (the floor of a durable acknowledgement).

Issue 20's goals: API p99 <= 2 ms at 1,000 requests/s; the collector >= 10,000 events/s. Figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VEGETA = REPO / ".cache" / "bin" / "vegeta"
VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.13.0"
API_KEY, WRITE_KEY = "bench-api-key-0123456789", "bench-write-key-0123456789"


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def vegeta() -> Path:
    """vegeta, built once from the Go module proxy into .cache/bin."""
    if not VEGETA.exists():
        if not shutil.which("go"):
            raise SystemExit("bench/serving.py needs Go once to build vegeta (a load generator): install Go")
        print(f"building {VEGETA_MODULE} into {VEGETA.parent} (once) ...", flush=True)
        env = {**os.environ, "GOBIN": str(VEGETA.parent), "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "install", VEGETA_MODULE], env=env, check=True)
    return VEGETA


def _wait(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def attack(targets: Path, rate: int, seconds: int, out: Path) -> dict:
    """vegeta at a constant rate; its JSON report (latencies in ns)."""
    results = out.with_suffix(".bin")
    subprocess.run([str(vegeta()), "attack", f"-targets={targets}", f"-rate={rate}/s", f"-duration={seconds}s",
                    "-timeout=10s", "-max-workers=2000", f"-output={results}"], check=True)  # fmt: skip
    report = subprocess.run([str(vegeta()), "report", "-type=json", str(results)], check=True, capture_output=True,
                            text=True).stdout  # fmt: skip
    return json.loads(report)


def _ms(report: dict, key: str) -> float:
    return report["latencies"][key] / 1e6


def redis_floor_latency(port: int) -> dict:
    """A plain GET's latency from the client library the API reads with (redis-py with hiredis), one client,
    20,000 GETs: p50/p99/max in ms."""
    import redis

    client = redis.Redis(port=port)
    client.set("bench:floor", "x")
    times = []
    for _ in range(20_000):
        started = time.perf_counter()
        client.get("bench:floor")
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99)], "max_ms": times[-1]}


def file_floor(lines: list[str], requests: int) -> dict:
    """Writing a request's lines to a new file and fsyncing it, `requests` times: the durable floor."""
    folder = Path(tempfile.mkdtemp(prefix="bench-fsync-"))
    times = []
    for n in range(requests):
        started = time.perf_counter()
        with open(folder / f"{n}.ndjson", "w") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        times.append((time.perf_counter() - started) * 1000)
    shutil.rmtree(folder)
    times.sort()
    return {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-rates", default="1000,5000")
    parser.add_argument("--collector-rates", default="20,100", help="requests/s of 100-event batches")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--persons", type=int, default=10_000)
    args = parser.parse_args()
    vegeta()

    from spark_jobs.serving.online_store import _Writer

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    ports = SimpleNamespace(redis=_port(), api=_port(), collector=_port())
    env = {**os.environ, "INTENTLAKE_LAKEHOUSE": str(work / "lakehouse"), "INTENTLAKE_REDIS_DIR": str(work / "redis"),
           "INTENTLAKE_REDIS_PORT": str(ports.redis), "INTENTLAKE_REDIS_URL": f"redis://127.0.0.1:{ports.redis}/0",
           "INTENTLAKE_API_KEYS": API_KEY, "INTENTLAKE_COLLECTOR_WRITE_KEYS": WRITE_KEY,
           "INTENTLAKE_MAX_EVENT_AGE": "3650 days"}  # fmt: skip
    script = REPO / "scripts" / "redis.sh"
    subprocess.run([str(script), "up"], env=env, check=True)
    processes: list[subprocess.Popen] = []
    results: dict = {"persons": args.persons, "seconds": args.seconds}
    try:
        segment = {"segment": "High Intent", "intent_score": "85.0", "model_version": "weighted-v1",
                   "contributions": json.dumps({"cart_add": 45.0, "product_views": 40.0})}  # fmt: skip
        rows = []
        for i in range(args.persons):
            for key, group, fields in ((f"p:p-{i}", "segment", segment),
                                       (f"p:p-{i}", "consent", {"consent_personalization": "1"}),
                                       (f"id:user_id:u-{i}", "identity", {"person_id": f"p-{i}"})):  # fmt: skip
                rows.append(
                    SimpleNamespace(key=key, grp=group, fields=fields, _commit_version=1, _change_type="insert")
                )
        list(_Writer(env["INTENTLAKE_REDIS_URL"], "il:", 86400, False, ())(rows))
        log = open(work / "servers.log", "w")
        for service, port in (("api", ports.api), ("collector", ports.collector)):
            command = [sys.executable, "-m", "spark_jobs.cli", "serve", service, "--port", str(port)]
            processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
        _wait(f"http://127.0.0.1:{ports.api}/healthz")
        _wait(f"http://127.0.0.1:{ports.collector}/healthz")

        import random

        random.seed(7)
        targets = work / "api.targets"
        with open(targets, "w") as out:
            for _ in range(5000):
                out.write(f"GET http://127.0.0.1:{ports.api}/api/content?user_id=u-{random.randrange(args.persons)}"
                          f"&time=19:05\nX-API-Key: {API_KEY}\n\n")  # fmt: skip
        attack(targets, 200, 3, work / "warmup")
        floor = redis_floor_latency(ports.redis)
        results["redis_get_floor"] = floor
        results["api"] = []
        print(
            f"\nplain Redis GET (one client, Python redis): p50 {floor['p50_ms']:.3f} ms, p99 {floor['p99_ms']:.3f} ms"
        )
        print("decision API, GET /api/content (a known, consenting person; one uvicorn process):")
        header = ("rate/s", 7), ("ok %", 6), ("p50 ms", 8), ("p95 ms", 8), ("p99 ms", 8), ("max ms", 8), ("x floor", 9)
        print("  " + " ".join(f"{name:>{width}}" for name, width in header))
        for rate in (int(r) for r in args.api_rates.split(",")):
            report = attack(targets, rate, args.seconds, work / f"api-{rate}")
            row = {"rate": rate, "success": report["success"], "throughput": report["throughput"],
                   **{k: _ms(report, key) for k, key in (("p50_ms", "50th"), ("p95_ms", "95th"), ("p99_ms", "99th"),
                                                          ("max_ms", "max"))}}  # fmt: skip
            results["api"].append(row)
            print(f"  {rate:>7} {100 * row['success']:>6.1f} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} "
                  f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.1f} {row['p99_ms'] / floor['p99_ms']:>8.1f}x")  # fmt: skip

        body = {"batch": [{"type": "track", "event": "Product Viewed", "anonymousId": f"a-{i % 50}",
                           "timestamp": "2026-12-05T10:00:00Z", "properties": {"product_id": f"sku-{i}"}}
                          for i in range(100)]}  # fmt: skip
        (work / "batch.json").write_text(json.dumps(body))
        import base64

        auth = base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
        collector_targets = work / "collector.targets"
        collector_targets.write_text(f"POST http://127.0.0.1:{ports.collector}/v1/batch\nAuthorization: Basic {auth}\n"
                                     f"Content-Type: application/json\n@{work / 'batch.json'}\n\n")  # fmt: skip
        lines = [json.dumps(m) for m in body["batch"]]
        fsync = file_floor(lines, 200)
        results["fsync_floor"] = fsync
        results["collector"] = []
        print(f"\nwriting and fsyncing a request's 100 lines to a new file: p50 {fsync['p50_ms']:.2f} ms, "
              f"p99 {fsync['p99_ms']:.2f} ms (the floor of a durable acknowledgement)")  # fmt: skip
        print("collector, POST /v1/batch of 100 Segment messages into the landing zone (one uvicorn process):")
        print(f"  {'req/s':>7} {'events/s':>9} {'ok %':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for rate in (int(r) for r in args.collector_rates.split(",")):
            report = attack(collector_targets, rate, args.seconds, work / f"collector-{rate}")
            row = {"rate": rate, "events_per_second": 100 * report["throughput"] * report["success"],
                   "success": report["success"], "p50_ms": _ms(report, "50th"), "p99_ms": _ms(report, "99th"),
                   "max_ms": _ms(report, "max")}  # fmt: skip
            results["collector"].append(row)
            print(f"  {rate:>7} {row['events_per_second']:>9,.0f} {100 * row['success']:>6.1f} {row['p50_ms']:>8.2f} "
                  f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.1f}")  # fmt: skip
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
        subprocess.run([str(script), "down"], env=env)
    out = REPO / "bench" / "results" / f"serving-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nfigures in {out}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
