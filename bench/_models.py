"""The benchmark models, trained once per ``make bench`` run and shared by its files.

``bench_inference.train_model`` is deterministic (fixed data and seed), so a bundle saved by
one benchmark file and loaded by the next is the model the others train. ``bench.run`` sets
``ARBOR_BENCH_MODEL_CACHE`` to a directory of the run; without it every call trains.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench import bench_inference as bi


def model(model_type: str) -> Any:
    """The 300-tree binary model of ``model_type`` (from the run's cache when there is one)."""
    from arbor_core.artifacts import LocalArtifactStore
    from arbor_ml import bundle_prefix, load_bundle, save_bundle

    root = os.environ.get("ARBOR_BENCH_MODEL_CACHE", "").strip()
    prefix = bundle_prefix(f"bench-{model_type}", 1)
    store = LocalArtifactStore(root) if root else None
    if store is not None and store.exists(prefix + "manifest.json"):
        return load_bundle(store, prefix)
    started = time.perf_counter()
    bundle = bi.train_model(model_type)
    print(f"trained {model_type}: {time.perf_counter() - started:.1f}s", file=sys.stderr)
    if store is not None:
        save_bundle(bundle, store, prefix)
    return bundle
