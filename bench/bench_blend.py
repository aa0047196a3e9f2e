"""What a blend costs to serve: a three-library blend beside its members, in process.

An AUTO study registers a blend of up to three trials (``arbor_ml.ensemble``). This measures
the price of that at serving time, on the inference benchmark's models (binary, 300 trees on
30 numeric features each; LightGBM and XGBoost compiled, CatBoost's small batches through its
numpy predictor, as the inference service loads them): the fast path's predict (the one the
service runs for small batches and numeric data) for 1 and 1,000 rows, and the Polars path
(``ModelBundle.predict_raw``) beside it. Medians of repeated calls, one thread.

    python -m bench.bench_blend            # writes bench/results/blend.json
    python -m bench.bench_blend --short
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import _models
from bench import bench_inference as bi

RESULTS = Path(__file__).resolve().parent / "results" / "blend.json"
LIBRARIES = ("lightgbm", "xgboost", "catboost")
WEIGHTS = (0.4, 0.3, 0.3)


def median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    from arbor_inference.domain import input_spec
    from arbor_inference.fastpath import FastPath
    from arbor_inference.inputs import Table
    from arbor_ml.compiled import enable_compiled
    from arbor_ml.ensemble import blend_bundles

    repeats = 200 if args.short else 2000
    members = {library: _models.model(library) for library in LIBRARIES}
    blend = blend_bundles(list(members.values()), list(WEIGHTS))
    cache = tempfile.mkdtemp(prefix="arbor-blend-bench-")
    for library in ("lightgbm", "xgboost"):
        enable_compiled(members[library], cache)
    for member in blend.model.members:
        enable_compiled(member.model, cache)
    frame = bi.request_frame(1_000)
    rows: list[dict[str, Any]] = []
    for name, bundle in [*members.items(), ("blend of the three", blend)]:
        spec = input_spec(bundle, None)
        fast = FastPath.build(bundle, spec, oblivious=True)
        assert fast is not None, f"no fast path for {name}"
        row: dict[str, Any] = {"model": name}
        for n in (1, 1_000):
            part = frame.head(n)
            table = Table.from_frame(part, spec)
            count = repeats if n == 1 else max(repeats // 20, 20)
            row[f"fast_{n}_ms"] = round(median_ms(partial(fast.predict_raw, table), count), 4)
            row[f"polars_{n}_ms"] = round(
                median_ms(partial(bundle.predict_raw, part), max(count // 10, 20)), 4
            )
        rows.append(row)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"python {platform.python_version()}",
        "weights": dict(zip(LIBRARIES, WEIGHTS, strict=True)),
        "rows": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print("| model | fast path, 1 row | fast path, 1,000 rows | Polars path, 1 row "
          "| Polars path, 1,000 rows |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['model']} | {row['fast_1_ms'] * 1000:.0f} µs | {row['fast_1000_ms']:.2f} ms "
            f"| {row['polars_1_ms']:.2f} ms | {row['polars_1000_ms']:.2f} ms |"
        )
    print(f"\n{report['date']}, {report['machine']}; wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
