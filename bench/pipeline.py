"""The whole pipeline on one generated input, against pandas, DuckDB and Flink doing the same session work.

    .venv/bin/python bench/pipeline.py [--events 200000] [--scales 1,4,16] [--references pandas,duckdb,flink]
                                       [--flink-max-events 1000000] [--freshness-files 30 | --no-freshness] [--keep]

For each scale (a multiple of --events): simulate the input with the project's simulator into a temp
lakehouse, run `intentlake run all` (bronze -> silver -> gold, availableNow) in a child process, and sample
that child's whole process tree (Python driver, the JVM, Spark's Python workers) every 0.2 s for CPU time
and resident memory. Then run each reference in a child process on the same landing files and the same
cores, sampled the same way, and compare its sessions with silver.sessions row by row: a reference's time
is only compared (as a ratio) when it produced exactly the same sessions and core features. The Flink
reference runs with .venv-flink's interpreter (`make bench-flink`; PyFlink's py4j is not pyspark's) and is
included by default when that venv exists; above --flink-max-events it is left out (PyFlink runs at a few
hundred events/s here and holds every device's events in state until the end of the input).

Then, once, freshness at a steady event rate (bench/freshness.py in a child process, sampled the same way):
bronze, silver and gold streaming with a processing-time trigger while files land one at a time; p50/p99
from an event's landing to its session in silver and its score in gold.

Writes bench/results/<timestamp>.json and .md (the Markdown is printed too). What each figure means is in
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import deltalake
import pandas as pd
import psutil
from references.compare import compare_sessions  # bench/references/ (scripts run as files: bench/ is on the path)

from spark_jobs.settings import REPO_ROOT, Settings
from spark_jobs.simulate import simulate

BENCH = Path(__file__).resolve().parent
REFERENCES = {
    "pandas": BENCH / "references" / "pandas_sessions.py",
    "duckdb": BENCH / "references" / "duckdb_sessions.py",
    "flink": BENCH / "references" / "flink_sessions.py",
}
FRESHNESS = BENCH / "freshness.py"
FLINK_PYTHON = REPO_ROOT / ".venv-flink" / "bin" / "python"  # `make bench-flink`
LAYERS = ("bronze", "silver", "gold")
SAMPLE_SECONDS = 0.2


@dataclass
class Measured:
    """One child process tree: wall time, CPU time of every process in it, peak resident memory."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int  # sum over the tree's processes at the sample where it was largest
    peak_jvm_rss_bytes: int
    peak_pss_bytes: int  # proportional set size summed over the tree (shared pages split between sharers)
    processes: int  # distinct processes seen in the tree
    samples: int
    returncode: int
    output: str = field(repr=False, default="")


def run_measured(command: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run `command` and sample its process tree until it exits.

    CPU: per process (pid + start time) the last user+system time seen, summed; a process's CPU after the
    last sample before it ends (under 0.2 s each) is not counted, so the figure is a slight lower bound.
    Memory: the sum of RSS over the tree at each sample; pages shared between forked workers count once per
    process, so this overstates what the tree needs; PSS splits them and does not.
    """
    cpu: dict[tuple[int, float], float] = {}
    peak = peak_jvm = peak_pss = samples = 0
    started = time.monotonic()
    with open(log, "w") as out:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        root = psutil.Process(child.pid)
        while True:
            done = child.poll() is not None
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            rss = jvm = pss = 0
            for proc in tree:
                try:
                    with proc.oneshot():
                        times = proc.cpu_times()
                        memory = proc.memory_info().rss
                        name = proc.name()
                        cpu[(proc.pid, proc.create_time())] = times.user + times.system
                        pss += proc.memory_full_info().pss  # smaps_rollup: cheap enough every sample
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
                rss += memory
                jvm += memory if name == "java" else 0
            peak, peak_jvm, peak_pss = max(peak, rss), max(peak_jvm, jvm), max(peak_pss, pss)
            samples += 1
            if done:
                break
            time.sleep(SAMPLE_SECONDS)
    wall = time.monotonic() - started
    return Measured(
        wall, sum(cpu.values()), peak, peak_jvm, peak_pss, len(cpu), samples, child.returncode, log.read_text()
    )


def machine() -> dict:
    """Cores, memory, CPU model and the versions that matter for these figures."""
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or "unknown",
    )  # fmt: skip
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    versions = {name: metadata.version(name) for name in ("pyspark", "delta-spark", "pandas", "pyarrow", "duckdb")}
    if FLINK_PYTHON.exists():
        versions["apache-flink"] = subprocess.run(
            [str(FLINK_PYTHON), "-c", "from importlib.metadata import version; print(version('apache-flink'))"],
            capture_output=True, text=True,
        ).stdout.strip() or "unknown"  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "os": platform.platform(),
        "python": platform.python_version(),
        "java": java[0] if java else "unknown",
        **versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _child_env(lakehouse: Path) -> dict[str, str]:
    """The caller's environment with every data path under `lakehouse` (other INTENTLAKE_* settings kept)."""
    env = {k: v for k, v in os.environ.items() if k not in ("INTENTLAKE_LANDING", "INTENTLAKE_CHECKPOINTS",
                                                            "INTENTLAKE_TRUTH")}  # fmt: skip
    env["INTENTLAKE_LAKEHOUSE"] = str(lakehouse)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(REPO_ROOT), env.get("PYTHONPATH"))))
    return env


def last_json(output: str) -> dict:
    """A child's own figures: the last line of its output that is a JSON object (a JVM may log after it)."""
    return json.loads(next(line for line in reversed(output.splitlines()) if line.startswith("{")))


def phase_costs(pipeline_runs: Path) -> list[dict]:
    """Where the layers' time went: every `<phase>_ms` figure the batches recorded in
    ops.pipeline_runs.details (each job's phases do not overlap), summed per job and phase, largest first."""
    runs = deltalake.DeltaTable(str(pipeline_runs)).to_pyarrow_table(columns=["job", "details"]).to_pylist()
    totals: dict[tuple[str, str], int] = {}
    for run in runs:
        for key, value in run["details"]:
            if key.endswith("_ms"):
                totals[run["job"], key] = totals.get((run["job"], key), 0) + int(value)
    ranked = sorted(totals.items(), key=lambda item: -item[1])
    return [{"job": job, "phase": key.removesuffix("_ms"), "seconds": ms / 1000} for (job, key), ms in ranked]


def _rate(events: int, seconds: float | None) -> float | None:
    return events / seconds if seconds else None


def run_scale(events_wanted: int, seed: int, references: list[str], flink_max_events: int, work: Path) -> dict:
    lakehouse = work / "lakehouse"
    env = _child_env(lakehouse)
    paths = Settings.from_env().with_root(lakehouse)  # where the child's settings put landing and tables
    t0 = time.monotonic()
    summary = simulate(paths.landing, paths.truth, events=events_wanted, seed=seed)
    simulate_s = time.monotonic() - t0
    print(
        f"  simulated {summary.events:,} events ({summary.lines:,} lines, {summary.files} files) in {simulate_s:.1f}s"
    )

    print("  intentlake run all ...", flush=True)
    run = run_measured([sys.executable, "-m", "spark_jobs.cli", "run", "all"], env, work / "intentlake.log")
    if run.returncode != 0:
        raise SystemExit(f"intentlake run all failed ({run.returncode}); its output:\n{run.output[-4000:]}")
    layer_s = {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+): done in ([\d.]+)s", run.output, re.M)}
    events = deltalake.DeltaTable(str(paths.table_path("bronze.events"))).to_pyarrow_dataset().count_rows()
    silver = deltalake.DeltaTable(str(paths.table_path("silver.sessions"))).to_pandas()
    bronze_silver_s = layer_s.get("bronze", 0.0) + layer_s.get("silver", 0.0)
    intentlake = {
        **asdict(run),
        "events": events,
        "sessions": len(silver),
        "layer_seconds": layer_s,
        "startup_seconds": run.wall_s - sum(layer_s.values()),  # interpreter, JVM, Spark session, table set-up
        "bronze_silver_seconds": bronze_silver_s,
        "events_per_s": _rate(events, run.wall_s),
        "events_per_s_by_layer": {layer: _rate(events, s) for layer, s in layer_s.items()},
        "cpu_s_per_million_events": run.cpu_s / events * 1e6,
        "phases": phase_costs(paths.table_path("ops.pipeline_runs")),
    }
    intentlake.pop("output")
    print(f"  intentlake: {events:,} events, {len(silver):,} sessions in {run.wall_s:.1f}s "
          f"({', '.join(f'{k} {v:.1f}s' for k, v in layer_s.items())})")  # fmt: skip

    refs: dict[str, dict] = {}
    for name in references:
        if name == "flink" and events > flink_max_events:
            refs[name] = {"skipped": f"{events:,} events is over --flink-max-events {flink_max_events:,}"}
            print(f"  reference flink: left out ({refs[name]['skipped']})")
            continue
        out = work / f"{name}.parquet"
        print(f"  reference {name} ...", flush=True)
        python = str(FLINK_PYTHON) if name == "flink" else sys.executable
        ref = run_measured([python, str(REFERENCES[name]), str(paths.landing), str(out)], env,
                           work / f"{name}.log")  # fmt: skip
        if ref.returncode != 0:
            refs[name] = {"error": ref.output[-2000:]}
            print(f"    failed ({ref.returncode}):\n{ref.output[-2000:]}")
            continue
        check = compare_sessions(silver, pd.read_parquet(out))
        same = check["mismatches"] == 0
        own = last_json(ref.output)
        refs[name] = {
            **asdict(ref),
            "own_seconds": own["seconds"],
            "events": own["events"],
            "comparison": check,
            "same_sessions": same,
            "events_per_s": _rate(events, ref.wall_s),
            "cpu_s_per_million_events": ref.cpu_s / events * 1e6,
            # reference time / intentlake time: below 1 the reference is faster; only when the sessions agree
            "ratio_vs_end_to_end": ref.wall_s / run.wall_s if same else None,
            "ratio_vs_bronze_silver": ref.wall_s / bronze_silver_s if same and bronze_silver_s else None,
        }
        refs[name].pop("output")
        verdict = "same sessions" if same else f"{check['mismatches']:,} MISMATCHES (no ratio): {check}"
        print(f"    {name}: {ref.wall_s:.1f}s, {verdict}")
    return {
        "events_requested": events_wanted,
        "simulation": {**asdict(summary), "seconds": simulate_s},
        "intentlake": intentlake,
        "references": refs,
    }


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# intentlake pipeline benchmark, {result['started_at']}",
        "",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM, {m['os']}; Python {m['python']}, "
        f"{m['java']}, pyspark {m['pyspark']}, delta-spark {m['delta-spark']}, pandas {m['pandas']}, "
        f"duckdb {m['duckdb']}{', apache-flink ' + m['apache-flink'] if 'apache-flink' in m else ''}; "
        f"load average at start {m['load_average_at_start']}, "
        f"at end {m['load_average_at_end']}.",
        f"Command: `{result['command']}`",
        "",
    ]
    for scale in result["scales"]:
        il = scale["intentlake"]
        ev = il["events"]
        layers = il["events_per_s_by_layer"]
        lines += [
            f"## {ev:,} events ({scale['simulation']['lines']:,} landing lines, {il['sessions']:,} sessions)",
            "",
            "| implementation | work | wall s | events/s | CPU-s / M events | peak RSS (tree) | peak PSS | "
            "same sessions | time ratio vs intentlake e2e | vs bronze+silver |",
            "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
            f"| intentlake `run all` | bronze+silver+gold, Delta, start-up | {il['wall_s']:.1f} | "
            f"{_num(il['events_per_s'])} | {il['cpu_s_per_million_events']:,.0f} | {_mb(il['peak_rss_bytes'])} "
            f"(JVM {_mb(il['peak_jvm_rss_bytes'])}) | {_mb(il['peak_pss_bytes'])} | n/a | 1 | |",
        ]
        for name, ref in scale["references"].items():
            if "error" in ref or "skipped" in ref:
                why = "failed" if "error" in ref else f"left out: {ref['skipped']}"
                lines.append(f"| {name} | {why} | | | | | | | | |")
                continue
            same = "yes" if ref["same_sessions"] else f"NO: {ref['comparison']['mismatches']:,} mismatches"
            lines.append(
                f"| {name} | dedup + sessions + core features | {ref['wall_s']:.1f} | {_num(ref['events_per_s'])} | "
                f"{ref['cpu_s_per_million_events']:,.0f} | {_mb(ref['peak_rss_bytes'])} | "
                f"{_mb(ref['peak_pss_bytes'])} | {same} | "
                f"{_num(ref['ratio_vs_end_to_end'], '{:.3f}')} | {_num(ref['ratio_vs_bronze_silver'], '{:.3f}')} |"
            )
        per_layer = ", ".join(
            f"{layer} {il['layer_seconds'][layer]:.1f}s = {_num(layers[layer])} events/s"
            for layer in LAYERS
            if layer in layers
        )
        costs = ", ".join(f"{p['job']} {p['phase']} {p['seconds']:.1f}s" for p in il.get("phases", [])[:5])
        lines += [
            "",
            f"intentlake by layer: {per_layer}; start-up {il['startup_seconds']:.1f}s.",
            f"Largest phases (ops.pipeline_runs.details): {costs}.",
            "",
        ]
    if len(result["scales"]) > 1:
        lines += scaling_table(result["scales"])
    if result.get("freshness"):
        lines += freshness_table(result["freshness"])
    return "\n".join(lines) + "\n"


def scaling_table(scales: list[dict]) -> list[str]:
    """Time and memory per scale, and how each grew against the smallest scale."""
    first = scales[0]
    names = ["intentlake", *first["references"]]

    def figures(scale: dict, name: str) -> dict | None:
        run = scale["intentlake"] if name == "intentlake" else scale["references"].get(name, {})
        return run if "wall_s" in run else None

    lines = [
        "## Scaling",
        "",
        "| implementation | scale | events | wall s | time growth | events/s | peak PSS | memory growth |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        base = figures(first, name)  # growth only against the smallest scale's own run
        for scale in scales:
            run = figures(scale, name)
            if run is None:
                lines.append(f"| {name} | {scale['scale']}x | | left out or failed | | | | |")
                continue
            events = scale["intentlake"]["events"]
            time_growth = f"{run['wall_s'] / base['wall_s']:.2f}x" if base else ""
            memory_growth = (
                f"{run['peak_pss_bytes'] / base['peak_pss_bytes']:.2f}x" if base and base["peak_pss_bytes"] else ""
            )
            lines.append(
                f"| {name} | {scale['scale']}x | {events:,} | {run['wall_s']:.1f} | {time_growth} | "
                f"{_num(_rate(events, run['wall_s']))} | {_mb(run['peak_pss_bytes'])} | {memory_growth} |"
            )
    return [*lines, ""]


_MODES = {
    "streams": "bronze + silver + gold streaming in one application",
    "chained": "the layers chained in cycles of at most the trigger, `run all --trigger`",
}


def freshness_table(f: dict) -> list[str]:
    """Landing -> bronze / silver / gold at a steady rate (bench/freshness.py's figures)."""
    if "error" in f:
        return [
            "## Freshness",
            "",
            f"bench/freshness.py failed (exit {f['returncode']}); see the JSON for its output.",
            "",
        ]

    def row(label: str, key: str, ratio: str | None) -> str:
        s = f[key]
        if s["p50"] is None:
            return f"| {label} | no event measured | | | |"
        shown = "1 (baseline)" if ratio is None else _num(f[ratio], "{:.1f}x")
        return f"| {label} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} | {shown} |"

    return [
        f"## Freshness at ~{f['events_per_s']:,.0f} events/s (one file of ~{f['lines'] // f['files']:,} lines every "
        f"{f['interval_s']:.0f} s, trigger {f['trigger']!r}, {_MODES[f.get('mode', 'streams')]})",
        "",
        f"{f['events_measured']:,} on-time events (the first {f['skipped_files']} files left out); "
        f"{f['events_in_silver']:,} reached silver and {f['events_in_gold']:,} gold; all streams idle "
        f"{f['caught_up_s_after_last_file']:.0f} s after the last file; batches {f['batches']}; "
        f"peak PSS of the process tree {_mb(f['peak_pss_bytes'])}.",
        "",
        "| from landing to | p50 s | p99 s | max s | p50 vs bronze |",
        "|---|---:|---:|---:|---:|",
        row("bronze.events (the floor)", "landing_to_bronze_s", None),
        row("its session in silver.sessions", "landing_to_silver_s", "ratio_silver_p50_vs_bronze_p50"),
        row("its score in gold.session_scores", "landing_to_gold_s", "ratio_gold_p50_vs_bronze_p50"),
        "",
    ]


def run_freshness(args: argparse.Namespace, work: Path) -> dict:
    """bench/freshness.py in a child process, its tree sampled like the others; its figures from its last line."""
    command = [sys.executable, str(FRESHNESS), "--events", str(args.freshness_events), "--files",
               str(args.freshness_files), "--interval", str(args.freshness_interval), "--trigger", args.trigger,
               "--skip", str(args.freshness_skip), "--mode", args.freshness_mode]  # fmt: skip
    print(f"freshness: {args.freshness_files} files, one every {args.freshness_interval:.0f}s ...", flush=True)
    run = run_measured(command, _child_env(work / "lakehouse"), work / "freshness.log")
    if run.returncode != 0:  # the scales' results are still written
        print(f"  bench/freshness.py failed ({run.returncode}):\n{run.output[-4000:]}")
        return {"error": run.output[-4000:], "returncode": run.returncode}
    figures = last_json(run.output)
    measured = asdict(run)
    measured.pop("output")
    return {**figures, **measured}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events at scale 1 (default %(default)s)")
    parser.add_argument("--scales", default="1", help="comma-separated multiples of --events (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default %(default)s)")
    default_references = [name for name in REFERENCES if name != "flink" or FLINK_PYTHON.exists()]
    parser.add_argument(
        "--references",
        default=",".join(default_references),
        help="comma-separated, or 'none' (default %(default)s: flink when .venv-flink exists)",
    )
    parser.add_argument(
        "--flink-max-events",
        type=int,
        default=1_000_000,
        help="leave the flink reference out of scales above this many events (default %(default)s)",
    )
    parser.add_argument("--no-freshness", action="store_true", help="skip the steady-rate freshness run")
    parser.add_argument("--freshness-events", type=int, default=9_000, help="events fed (default %(default)s)")
    parser.add_argument("--freshness-files", type=int, default=30, help="files they land in (default %(default)s)")
    parser.add_argument("--freshness-interval", type=float, default=10.0, help="seconds between files (%(default)s)")
    parser.add_argument("--freshness-skip", type=int, default=3, help="first files left out (default %(default)s)")
    parser.add_argument("--freshness-mode", choices=("chained", "streams"), default="chained",
                        help="the layers chained in cycles (`run all --trigger`), or three streams on their own "
                             "triggers (default %(default)s)")  # fmt: skip
    parser.add_argument("--trigger", default="5 seconds", help="the streams' processing-time trigger (%(default)s)")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="where to write the results")
    parser.add_argument("--keep", action="store_true", help="keep the temp lakehouses and logs")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",") if s.strip()]
    references = [] if args.references == "none" else [r.strip() for r in args.references.split(",") if r.strip()]
    unknown = set(references) - set(REFERENCES)
    if unknown:
        parser.error(f"unknown references {sorted(unknown)}; choose from {sorted(REFERENCES)}")
    if not args.no_freshness and not 0 <= args.freshness_skip < args.freshness_files:
        parser.error(f"--freshness-skip {args.freshness_skip} leaves no file of --freshness-files to measure")
    if not re.fullmatch(r"\d+(\.\d+)? ?(millisecond|second|minute|hour)s?", args.trigger):
        parser.error(f"--trigger {args.trigger!r}: an interval such as '5 seconds'")
    if "flink" in references and not FLINK_PYTHON.exists():
        parser.error(f"the flink reference runs in {FLINK_PYTHON.parent.parent.name}: `make bench-flink` creates it")
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    result = {
        "started_at": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "bench/pipeline.py", *sys.argv[1:]]),
        "machine": machine(),
        "scales": [],
    }
    for scale in scales:
        work = Path(tempfile.mkdtemp(prefix=f"intentlake-bench-pipeline-x{scale}-"))
        print(f"scale {scale}: {args.events * scale:,} events in {work}", flush=True)
        try:
            result["scales"].append(
                {"scale": scale, **run_scale(args.events * scale, args.seed, references, args.flink_max_events, work)}
            )
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    if not args.no_freshness:
        work = Path(tempfile.mkdtemp(prefix="intentlake-bench-freshness-"))
        try:
            result["freshness"] = run_freshness(args, work)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stamp}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = markdown(result)
    (args.results / f"{stamp}.md").write_text(text)
    print("\n" + text)
    print(f"written: {args.results / stamp}.json and .md")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # delta-rs (deltalake) may abort in its own teardown at interpreter exit: skip the teardown
