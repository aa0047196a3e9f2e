"""``make bench``: the whole suite in one run, one table, one JSON.

Runs each area's benchmark as a subprocess (so one's memory, threads and crashes never touch
another's figures), in this order, then reads their JSON files and prints ONE table:

1. ``bench_floor``     bare grpc.aio echo round trip; the libraries' own predict on numpy (one
                       thread); compiled predict; model cold-load time.
2. ``bench_inference`` Predict through the real gRPC server over loopback (1 / 1,000 /
                       10,000 rows, concurrency 1 and 8, JSON rows / typed columns / Arrow).
3. ``peer_mlserver``   MLServer with the same LightGBM and XGBoost models, same OIP load.
4. ``bench_split``     1,000,000 x 50 rows, each strategy: seconds and peak RSS.
5. ``bench_training``  overhead per trial, 1 vs 2 workers.
6. ``bench_events``    state change -> outbox -> JetStream -> subscriber, p50 / p99.

Ratios are what count (the machine is shared): every Predict figure is read against the
echo and in-process figures of the same run. Writes ``bench/results/summary.json`` (machine,
library versions, date, every figure and the targets) and ``bench/results/summary.md`` (the
table as Markdown, for docs/performance.md).

    make bench                      # full
    BENCH_MODE=short make bench     # short: fewer requests, fewer split strategies (< 3 min
                                    # on an idle 2-core machine; more when it is shared)
    python -m bench.run --only floor,events
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SUMMARY = RESULTS / "summary.json"
SUMMARY_MD = RESULTS / "summary.md"

#: Targets (issue 11).
SINGLE_ROW_SLACK_MS = 0.150
THROUGHPUT_RATIO = {"lightgbm": 1.0, "xgboost": 1.0, "catboost": 0.8}
PEER_THROUGHPUT_RATIO = 2.0
SPLIT_SECONDS = 5.0
SPLIT_MEMORY_RATIO = 3.0
TRIAL_OVERHEAD_MS = 50.0
WORKER_SPEEDUP = 1.7
EVENT_P99_MS = 50.0
COLD_LOAD_MS = 300.0


@dataclass(frozen=True)
class Step:
    name: str
    command: list[str]
    output: Path
    timeout_s: int


def steps(short: bool) -> list[Step]:
    py = sys.executable
    mode = ["--short"] if short else []
    split_strategies = (
        "random_stratified,time_row_fraction,entity_stratified"
        if short
        else "random,random_stratified,time_row_fraction,time_range,entity,entity_stratified"
    )
    training = (
        ["--trials", "10", "--scaling-trials", "6", "--scaling-iterations", "120"]
        if short
        else ["--trials", "40", "--scaling-trials", "16"]
    )
    # short: 1 and 10,000 rows only (the targets); full adds 1,000
    sizes = ["--sizes", "1,10000"] if short else []
    return [
        Step("floor", [py, "-m", "bench.bench_floor", *mode], RESULTS / "floor.json", 900),
        Step(
            "inference",
            [py, "bench/bench_inference.py", *mode, *sizes],
            RESULTS / "inference.json",
            1800,
        ),
        Step("peer", [py, "-m", "bench.peer_mlserver", *mode], RESULTS / "peer.json", 2400),
        Step(
            "split",
            [py, "bench/bench_split.py", "--rows", "1000000", "--strategies", split_strategies],
            RESULTS / "split.json",
            1200,
        ),
        Step(
            "training", [py, "bench/bench_training.py", *training], RESULTS / "training.json", 1200
        ),
        Step(
            "events",
            [py, "-m", "bench.bench_events", "--events", "150" if short else "500"],
            RESULTS / "events.json",
            300,
        ),
    ]


def run_step(step: Step, env: dict[str, str]) -> dict[str, Any]:
    """Run one benchmark; its JSON, or ``{"error": ...}`` (the suite goes on)."""
    print(f"\n=== {step.name}: {' '.join(step.command[1:])}", file=sys.stderr, flush=True)
    before = step.output.stat().st_mtime if step.output.exists() else None
    started = time.perf_counter()
    try:
        done = subprocess.run(step.command, cwd=ROOT, env=env, timeout=step.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {step.timeout_s}s"}
    seconds = time.perf_counter() - started
    print(f"=== {step.name}: {seconds:.0f} s", file=sys.stderr, flush=True)
    fresh = step.output.exists() and step.output.stat().st_mtime != before
    if done.returncode != 0 or not fresh:
        return {"error": f"exit code {done.returncode}", "seconds": round(seconds, 1)}
    data = json.loads(step.output.read_text())
    data["_seconds"] = round(seconds, 1)
    return dict(data)


# --------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str | None]:
    names = (
        "grpcio",
        "protobuf",
        "numpy",
        "polars",
        "pyarrow",
        "lightgbm",
        "xgboost",
        "catboost",
        "treelite",
        "tl2cgen",
        "nats-py",
        "SQLAlchemy",
        "optuna",
    )
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --------------------------------------------------------------------------- the table


@dataclass
class Row:
    area: str
    measure: str
    value: str
    reference: str = ""
    target: str = ""
    ok: bool | None = None


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def _signed_ms(value: float) -> str:
    return ("+" if value >= 0 else "-") + _ms(abs(value))


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} rows/s"


def _find(results: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for r in results:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def predict_rows(floor: dict[str, Any], inference: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    echo = floor.get("echo", {})
    echo1 = echo.get("c1", {}).get("p50_ms")
    echo8 = echo.get("c8", {}).get("p50_ms")
    if echo1 is not None:
        rows.append(
            Row(
                "grpc",
                "bare grpc.aio echo, 1-row payload, p50 / p99 (c=1)",
                f"{_ms(echo1)} / {_ms(echo['c1']['p99_ms'])}",
                f"c=8: {_ms(echo8)} / {_ms(echo['c8']['p99_ms'])}",
            )
        )
    on_uvloop = floor.get("echo_uvloop", {})
    if on_uvloop.get("c1") and echo1 is not None:
        rows.append(
            Row(
                "grpc",
                "same bare echo on uvloop, p50 / p99 (c=1)",
                f"{_ms(on_uvloop['c1']['p50_ms'])} / {_ms(on_uvloop['c1']['p99_ms'])}",
                f"the loop saves {_ms(echo1 - on_uvloop['c1']['p50_ms'])} per call",
            )
        )
    boot = floor.get("echo_bootstrap", {})
    if boot.get("c1") and echo1 is not None:
        loop = boot.get("loop", "asyncio")
        rows.append(
            Row(
                "grpc",
                f"same echo through arbor_core.server (interceptors, {loop}), p50 / p99 (c=1)",
                f"{_ms(boot['c1']['p50_ms'])} / {_ms(boot['c1']['p99_ms'])}",
                f"vs bare echo: {_signed_ms(boot['c1']['p50_ms'] - echo1)} per call",
            )
        )
    results = inference.get("results", [])
    for model, entry in floor.get("models", {}).items():
        lib = entry.get("library", {})
        comp = entry.get("compiled", {})
        lib1 = lib.get("1", {}).get("p50_ms")
        comp1 = comp.get("1", {}).get("p50_ms")
        # the model alone as Arbor calls it for one row: compiled code, CatBoost's trees
        # through arbor_ml.oblivious, else the library
        comp1 = (
            comp1 if comp1 is not None else entry.get("oblivious", {}).get("1", {}).get("p50_ms")
        )
        serve_floor = comp1 if comp1 is not None else lib1
        # 1 row, concurrency 1: best shape (typed columns / JSON rows), or typed columns when
        # the inference bench measured the budget beside them
        singles = [
            r for r in results if r["model"] == model and r["path"] == "grpc" and r["rows"] == 1
        ]
        c1 = min(
            (r for r in singles if r["concurrency"] == 1), key=lambda r: r["p50_ms"], default=None
        )
        # the budget's parts measured call by call beside Predict (typed columns), when the
        # inference bench has them: one slowdown of this shared machine then hits all three
        beside = {
            r["path"]: r
            for r in results
            if r["model"] == model
            and r["rows"] == 1
            and r["concurrency"] == 1
            and r["path"] in ("echo", "model-alone")
        }
        columns = next(
            (r for r in singles if r["concurrency"] == 1 and r["shape"] == "columns"), None
        )
        model_echo1 = echo1
        if "echo" in beside and "model-alone" in beside and columns is not None:
            c1, model_echo1 = columns, beside["echo"]["p50_ms"]
            serve_floor = beside["model-alone"]["p50_ms"]
        c8 = min(
            (r for r in singles if r["concurrency"] == 8), key=lambda r: r["p50_ms"], default=None
        )
        if c1 is not None and model_echo1 is not None and serve_floor is not None:
            budget = model_echo1 + serve_floor + SINGLE_ROW_SLACK_MS
            rows.append(
                Row(
                    model,
                    f"Predict 1 row ({c1['shape']}) p50 / p99, c=1",
                    f"{_ms(c1['p50_ms'])} / {_ms(c1['p99_ms'])}",
                    f"echo {_ms(model_echo1)} + predict {_ms(serve_floor)}"
                    + (f" (library {_ms(lib1)})" if comp1 is not None else ""),
                    f"<= {_ms(budget)}",
                    c1["p50_ms"] <= budget,
                )
            )
        if c8 is not None:
            rows.append(
                Row(
                    model,
                    f"Predict 1 row ({c8['shape']}) p50 / p99, c=8",
                    f"{_ms(c8['p50_ms'])} / {_ms(c8['p99_ms'])}",
                    f"echo c=8 {_ms(echo8)}",
                )
            )
        for size in (1_000, 10_000):
            ref = lib.get(str(size), {}).get("rows_per_s")
            cref = comp.get(str(size), {}).get("rows_per_s")
            # the library measured in turns with typed-column Predict (inference bench), when
            # there: the ratio then compares two figures of the same minutes
            adjacent = next(
                (
                    r
                    for r in results
                    if r["model"] == model and r["path"] == "library" and r["rows"] == size
                ),
                None,
            )
            if adjacent is not None:
                ref = adjacent["rows_per_s"]
            for concurrency in (1, 8):
                paired = adjacent is not None and concurrency == 1
                best = max(
                    (
                        r
                        for r in results
                        if r["model"] == model
                        and r["path"] == "grpc"
                        and r["rows"] == size
                        and r["concurrency"] == concurrency
                        and r["shape"] in (("columns",) if paired else ("columns", "arrow_ipc"))
                    ),
                    key=lambda r: r["rows_per_s"],
                    default=None,
                )
                if best is None:
                    continue
                target = THROUGHPUT_RATIO[model] if size == 10_000 else None
                ratio = best["rows_per_s"] / ref if ref else None
                reference = f"library {_rate(ref)}"
                if cref:
                    reference += f", compiled {_rate(cref)}"
                rows.append(
                    Row(
                        model,
                        f"Predict {size:,} rows ({best['shape']}), c={concurrency}",
                        _rate(best["rows_per_s"]),
                        reference + (f" = {ratio:.2f}x" if ratio else ""),
                        f">= {target:.1f}x library" if target and concurrency == 1 else "",
                        (ratio >= target) if (target and ratio and concurrency == 1) else None,
                    )
                )
            if size == 10_000:
                singles = next(
                    (
                        r
                        for r in results
                        if r["model"] == model
                        and r["path"] == "grpc"
                        and r["shape"] == "arrow_f32"
                        and r["rows"] == size
                    ),
                    None,
                )
                if singles is not None and ref:
                    rows.append(
                        Row(
                            model,
                            f"Predict {size:,} rows (float32 Arrow columns), c=1",
                            _rate(singles["rows_per_s"]),
                            f"library {_rate(ref)} = {singles['rows_per_s'] / ref:.2f}x "
                            "(half the bytes of doubles)",
                        )
                    )
        cold = entry.get("cold_load", {})
        fresh = entry.get("cold_load_fresh_process", {})
        if fresh.get("library_import_ms") is not None:
            rows.append(
                Row(
                    model,
                    "first model in a fresh process (import + load + predict)",
                    _ms(fresh["library_import_ms"] + fresh["load_and_predict_ms"]),
                    f"import {model} {_ms(fresh['library_import_ms'])}",
                )
            )
        if cold:
            extra = entry.get("cold_load_compiled", {})
            rows.append(
                Row(
                    model,
                    "cold load (load_bundle + 1st predict), p50, running service",
                    _ms(cold["p50_ms"]),
                    f"bundle {cold['bundle_bytes'] / 1e6:.1f} MB"
                    + (
                        f"; + cached compiled attach {_ms(extra.get('compiled_attach_ms'))}"
                        if extra
                        else ""
                    ),
                    f"< {COLD_LOAD_MS:.0f} ms",
                    cold["p50_ms"] < COLD_LOAD_MS,
                )
            )
        if entry.get("compile_seconds") is not None:
            rows.append(
                Row(
                    model,
                    "compiled: build once (background), then cache load",
                    f"{entry['compile_seconds']:.1f} s",
                    f"cache load {_ms(entry.get('compiled_load_ms'))}, "
                    f"max |diff| {entry.get('compiled_max_abs_diff', 0):.1e}",
                )
            )
        trees = entry.get("oblivious", {})
        if trees.get("1"):  # CatBoost: what serves its small batches instead of compiled code
            rows.append(
                Row(
                    model,
                    f"1 row through its oblivious trees ({trees['evaluator']}), p50",
                    _ms(trees["1"]["p50_ms"]),
                    f"library {_ms(lib1)}: batches of up to ~50 rows are served this way",
                )
            )
        elif entry.get("compile_seconds") is None and entry.get("compiled_unavailable"):
            rows.append(Row(model, "compiled", "off", entry["compiled_unavailable"]))
    return rows


def peer_rows(peer: dict[str, Any]) -> list[Row]:
    if "skipped" in peer:
        return [Row("peer", "MLServer", "skipped", peer["skipped"])]
    results = peer.get("results", [])
    rows = []
    for model in ("lightgbm", "xgboost"):
        for size, concurrency in ((1, 1), (1, 8), (10_000, 1), (10_000, 8)):
            ours = _find(results, server="arbor", model=model, rows=size, concurrency=concurrency)
            theirs = _find(
                results, server="mlserver", model=model, rows=size, concurrency=concurrency
            )
            if not ours or not theirs:
                continue
            if size == 1:
                rows.append(
                    Row(
                        f"peer {model}",
                        f"OIP 1 row p50 / p99, c={concurrency}: Arbor",
                        f"{_ms(ours['p50_ms'])} / {_ms(ours['p99_ms'])}",
                        f"MLServer {_ms(theirs['p50_ms'])} / {_ms(theirs['p99_ms'])}",
                        "lower p50" if concurrency == 1 else "",
                        (ours["p50_ms"] < theirs["p50_ms"]) if concurrency == 1 else None,
                    )
                )
            else:
                ratio = ours["rows_per_s"] / theirs["rows_per_s"]
                rows.append(
                    Row(
                        f"peer {model}",
                        f"OIP 10,000 rows, c={concurrency}: Arbor",
                        _rate(ours["rows_per_s"]),
                        f"MLServer {_rate(theirs['rows_per_s'])} = {ratio:.2f}x",
                        f">= {PEER_THROUGHPUT_RATIO:.0f}x",
                        ratio >= PEER_THROUGHPUT_RATIO,
                    )
                )
    return rows


def split_rows(split: dict[str, Any]) -> list[Row]:
    rows = []
    size = split.get("in_memory_bytes")
    for name, entry in split.get("strategies", {}).items():
        if "seconds" not in entry:
            continue
        ratio = entry.get("memory_ratio")
        rows.append(
            Row(
                "split",
                f"{split.get('rows', 0):,} x {split.get('columns', 50)}: {name}",
                f"{entry['seconds']:.2f} s, peak RSS {entry.get('peak_rss_bytes', 0) / 1e9:.2f} GB",
                f"in memory {size / 1e9:.2f} GB = {ratio:.2f}x" if size and ratio else "",
                f"< {SPLIT_SECONDS:.0f} s, < {SPLIT_MEMORY_RATIO:.0f}x",
                entry["seconds"] < SPLIT_SECONDS and (ratio or 0) < SPLIT_MEMORY_RATIO,
            )
        )
    return rows


def training_rows(training: dict[str, Any]) -> list[Row]:
    rows = []
    overhead = training.get("overhead", {})
    if overhead:
        value = overhead["overhead_ms_per_trial"]
        floor = overhead.get("optuna_rdb_floor_ms_per_trial")
        rows.append(
            Row(
                "training",
                f"overhead per trial ({training.get('backend', '?')})",
                f"{value:.1f} ms",
                f"Optuna RDB alone {floor:.1f} ms" if floor is not None else "",
                f"< {TRIAL_OVERHEAD_MS:.0f} ms",
                value < TRIAL_OVERHEAD_MS,
            )
        )
    scaling = training.get("scaling", {})
    if scaling:
        rows.append(
            Row(
                "training",
                "2 workers vs 1 (trials/min)",
                f"{scaling['speedup']:.2f}x",
                f"{scaling['one_worker']['trials_per_minute']:.1f} -> "
                f"{scaling['two_workers']['trials_per_minute']:.1f} trials/min",
                f">= {WORKER_SPEEDUP}x",
                scaling["speedup"] >= WORKER_SPEEDUP,
            )
        )
    return rows


def event_rows(events: dict[str, Any]) -> list[Row]:
    if "p99_ms" not in events:
        return []
    return [
        Row(
            "events",
            f"state change -> subscriber p50 / p99 ({events.get('backend')})",
            f"{_ms(events['p50_ms'])} / {_ms(events['p99_ms'])}",
            f"{events['events']} events, outbox + JetStream",
            f"p99 < {EVENT_P99_MS:.0f} ms",
            events["p99_ms"] < EVENT_P99_MS,
        )
    ]


def table(parts: dict[str, dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    rows += predict_rows(parts.get("floor", {}), parts.get("inference", {}))
    rows += peer_rows(parts.get("peer", {}))
    rows += split_rows(parts.get("split", {}))
    rows += training_rows(parts.get("training", {}))
    rows += event_rows(parts.get("events", {}))
    for name, data in parts.items():
        if "error" in data:
            rows.append(Row(name, "benchmark", "FAILED", data["error"]))
    return rows


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")


def render_text(rows: list[Row]) -> str:
    headers = ("area", "measure", "value", "reference (same run)", "target", "")
    cells = [headers] + [
        (r.area, r.measure, r.value, r.reference, r.target, _mark(r.ok)) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(headers))]
    lines = []
    for i, cell in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(cell, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[Row], info: dict[str, Any]) -> str:
    m = info["machine"]
    lines = [
        f"Measured {info['date']} on {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, "
        f"Python {m['python']} ({info['mode']} mode, load average "
        f"{info['load_average_before']} before / {info['load_average_after']} after).",
        "",
        "Libraries: "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
        + ".",
        "",
        "| area | measure | value | reference (same run) | target | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.area} | {r.measure} | {r.value} | {r.reference} | {r.target} | {_mark(r.ok)} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated step names")
    parser.add_argument(
        "--reuse", action="store_true", help="do not run anything: tabulate the last results"
    )
    args = parser.parse_args(argv)
    short = os.environ.get("BENCH_MODE", "").strip().lower() == "short"
    chosen = {s for s in args.only.split(",") if s}
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    if short:
        env["BENCH_MODE"] = "short"
    scratch = Path(tempfile.mkdtemp(prefix="arbor-bench-run-"))
    env.setdefault("ARBOR_BENCH_MODEL_CACHE", str(scratch / "models"))
    env.setdefault("ARBOR_COMPILED_CACHE_DIR", str(scratch / "compiled"))
    load_before = round(os.getloadavg()[0], 2)
    started = time.perf_counter()
    parts: dict[str, dict[str, Any]] = {}
    for step in steps(short):
        if chosen and step.name not in chosen:
            if step.output.exists():
                parts[step.name] = json.loads(step.output.read_text())
            continue
        if args.reuse:
            if step.output.exists():
                parts[step.name] = json.loads(step.output.read_text())
            continue
        parts[step.name] = run_step(step, env)
    info = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "short" if short else "full",
        "machine": machine(),
        "versions": versions()
        | {"mlserver (peer venv)": parts.get("peer", {}).get("peer", {}).get("version")},
        "load_average_before": load_before,
        "load_average_after": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.reuse and SUMMARY.exists():  # keep when and where the figures were measured
        previous = json.loads(SUMMARY.read_text())
        for key in ("date", "mode", "machine", "load_average_before", "load_average_after"):
            info[key] = previous.get(key, info[key])
    rows = table(parts)
    text = render_text(rows)
    m = info["machine"]
    print(
        f"\nArbor benchmark, {info['mode']} mode, {info['date']}: {m['cpu']}, {m['cores']} cores, "
        f"Python {m['python']}, load {load_before} -> {info['load_average_after']}"
    )
    print(", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None))
    print()
    print(text)
    summary = {
        **info,
        "targets": {
            "single_row_p50": f"<= echo p50 + in-process predict p50 + {SINGLE_ROW_SLACK_MS} ms",
            "throughput_10k_vs_library": THROUGHPUT_RATIO,
            "peer_throughput_ratio": PEER_THROUGHPUT_RATIO,
            "split_seconds": SPLIT_SECONDS,
            "split_memory_ratio": SPLIT_MEMORY_RATIO,
            "trial_overhead_ms": TRIAL_OVERHEAD_MS,
            "worker_speedup": WORKER_SPEEDUP,
            "event_p99_ms": EVENT_P99_MS,
            "cold_load_ms": COLD_LOAD_MS,
        },
        "table": [r.__dict__ for r in rows],
        "parts": parts,
    }
    shutil.rmtree(scratch, ignore_errors=True)  # the run's models and compiled libraries
    SUMMARY.write_text(json.dumps(summary, indent=2, default=str))
    SUMMARY_MD.write_text(render_markdown(rows, info))
    print(f"\nwrote {SUMMARY.relative_to(ROOT)} and {SUMMARY_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
