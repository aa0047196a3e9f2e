"""Benchmark of the split service's data work: every strategy on a generated Parquet file.

Generates ``--rows`` x 50 columns (30 float, 10 int, 4 string, 3 categorical, a timestamp, an
entity id and a binary target), then runs each strategy in a fresh subprocess (so peak memory
is that strategy's alone, read with ``os.wait4``) and reports seconds and peak RSS against the
frame's in-memory size. Targets: under 5 s per strategy on 2 cores, peak RSS under 3x.

    python bench/bench_split.py               # 1,000,000 rows
    python bench/bench_split.py --rows 50000  # short mode
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "split.json"
TARGET_SECONDS = 5.0
TARGET_MEMORY_RATIO = 3.0

STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"kind": "random", "stratify": False},
    "random_stratified": {"kind": "random", "stratify": True},
    "time_row_fraction": {"kind": "time", "mode": "row_fraction"},
    "time_range": {"kind": "time", "mode": "time_range"},
    "entity": {"kind": "entity", "stratify": False},
    "entity_stratified": {"kind": "entity", "stratify": True},
}


def generate(path: Path, rows: int, seed: int = 0) -> int:
    """Write the benchmark file; return the frame's in-memory size in bytes."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for i in range(30):
        columns[f"num_{i:02d}"] = rng.normal(size=rows)
    for i in range(10):
        columns[f"int_{i:02d}"] = rng.integers(0, 10_000, size=rows)
    levels = np.array([f"level_{j:02d}" for j in range(25)])
    for i in range(7):
        columns[f"cat_{i}"] = levels[rng.integers(0, len(levels), size=rows)]
    start = np.datetime64("2020-01-01T00:00:00", "us")
    columns["event_time"] = start + rng.integers(0, 3 * 365 * 86_400, size=rows).astype(
        "timedelta64[s]"
    )
    columns["customer_id"] = rng.integers(0, max(2, rows // 20), size=rows)
    columns["target"] = (rng.random(rows) < 0.25).astype(np.int64)
    frame = pl.DataFrame(columns).with_columns(
        [pl.col(f"cat_{i}").cast(pl.Categorical) for i in range(4, 7)]
    )
    assert frame.width == 50, frame.width
    frame.write_parquet(path)
    return int(frame.estimated_size())


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(path: str, strategy: str, workdir: str) -> None:
    """In the subprocess: one split, timing only the data work; prints JSON."""
    from arbor_split.domain import (
        DataAccess,
        EntityStrategy,
        Fractions,
        RandomStrategy,
        SplitSpec,
        TimeStrategy,
        UriSource,
        execute_split,
    )

    if strategy == "baseline":
        print(json.dumps({"seconds": 0.0, "cpu_seconds": 0.0}))  # imports only
        return
    params = STRATEGIES[strategy]
    match params["kind"]:
        case "random":
            chosen: Any = RandomStrategy(params["stratify"])
        case "time":
            chosen = TimeStrategy("event_time", params["mode"])
        case _:
            chosen = EntityStrategy("customer_id", params["stratify"])
    spec = SplitSpec(UriSource(path), "target", chosen, Fractions(0.7, 0.15, 0.15), 42)
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    outcome = execute_split(spec, DataAccess([str(Path(path).parent)]), Path(workdir))
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "seconds": seconds,
                # CPU time of the split (all threads): what it costs on an idle machine,
                # whatever else is running; wall time ~ cpu_seconds / cores in use.
                "cpu_seconds": _cpu_seconds() - cpu_before,
                "rows": {p.name: p.row_count for p in outcome.parts},
                "parquet_bytes": sum(p.size for p in outcome.parts),
                "content_hash": outcome.content_hash,
                "leakage_warnings": outcome.leakage.warnings,
            }
        )
    )


def measure(path: Path, strategy: str, scratch: Path) -> dict[str, Any]:
    """Run one strategy in a subprocess; peak RSS comes from that child's own rusage."""
    workdir = scratch / strategy
    started = time.perf_counter()
    log = scratch / f"{strategy}.stderr"
    command = [sys.executable, __file__, "--child", strategy]
    command += ["--data", str(path), "--work", str(workdir)]
    with log.open("wb") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{strategy} failed:\n{log.read_text()[-3000:]}")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if platform.system() == "Darwin" else 1024
    result["peak_rss_bytes"] = int(usage.ru_maxrss) * scale
    result["process_seconds"] = wall
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.data, args.child, args.work)
        return 0
    if args.generate:
        print(generate(Path(args.generate), args.rows))
        return 0

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="arbor-bench-split-") as tmp:
        scratch = Path(tmp)
        data = scratch / "bench.parquet"
        started = time.perf_counter()
        # In a subprocess too: Linux children inherit the parent's peak RSS at fork, so this
        # process must stay small for the children's ru_maxrss to be their own.
        in_memory = int(
            subprocess.run(
                [sys.executable, __file__, "--generate", str(data), "--rows", str(args.rows)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        print(
            f"generated {args.rows:,} rows x 50 columns in {time.perf_counter() - started:.1f}s: "
            f"{in_memory / 2**20:,.0f} MiB in memory, {data.stat().st_size / 2**20:,.0f} MiB "
            f"Parquet; {os.cpu_count()} CPUs"
        )
        # The interpreter with Polars and arbor_split imported, splitting nothing.
        baseline = measure(data, "baseline", scratch)["peak_rss_bytes"]
        results: dict[str, Any] = {}
        for strategy in args.strategies.split(","):
            result = measure(data, strategy, scratch)
            result["memory_ratio"] = result["peak_rss_bytes"] / in_memory
            result["meets_targets"] = (
                result["seconds"] < TARGET_SECONDS and result["memory_ratio"] < TARGET_MEMORY_RATIO
            )
            results[strategy] = result

    header = (
        f"{'strategy':<20} {'split s':>8} {'cpu s':>7} {'process s':>10} {'peak RSS MiB':>13} "
        f"{'x in-memory':>12} {'ok':>4}"
    )
    print(f"baseline RSS (interpreter + imports): {baseline / 2**20:,.0f} MiB")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<20} {r['seconds']:>8.2f} {r['cpu_seconds']:>7.2f} "
            f"{r['process_seconds']:>10.2f} "
            f"{r['peak_rss_bytes'] / 2**20:>13,.0f} {r['memory_ratio']:>12.2f} "
            f"{'yes' if r['meets_targets'] else 'NO':>4}"
        )
    report = {
        "benchmark": "split",
        "rows": args.rows,
        "columns": 50,
        "in_memory_bytes": in_memory,
        "baseline_rss_bytes": baseline,
        "cpus": os.cpu_count(),
        # Other work on the machine inflates wall times; cpu_seconds is unaffected by it.
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
        "targets": {"seconds": TARGET_SECONDS, "memory_ratio": TARGET_MEMORY_RATIO},
        "strategies": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
