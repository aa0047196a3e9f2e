"""The model LRU: one load per key, bounds by count and bytes, failures not cached."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from arbor_inference.cache import ModelCache


@dataclass
class Blob:
    name: str
    nbytes: int


@pytest.fixture
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(2)


async def test_concurrent_callers_share_one_load(pool: ThreadPoolExecutor) -> None:
    cache: ModelCache[Blob] = ModelCache(pool, max_models=4)
    loads = []
    gate = threading.Event()

    def load() -> Blob:
        loads.append(1)
        gate.wait(5)
        return Blob("a", 10)

    waiters = [asyncio.create_task(cache.get("a", load)) for _ in range(5)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*waiters)
    assert len(loads) == 1 and all(r is results[0] for r in results)
    assert cache.peek("a") is results[0]


async def test_lru_bounds_by_count_and_bytes(pool: ThreadPoolExecutor) -> None:
    cache: ModelCache[Blob] = ModelCache(pool, max_models=2, max_bytes=100)
    await cache.get("a", lambda: Blob("a", 10))
    await cache.get("b", lambda: Blob("b", 10))
    cache.peek("a")  # a is now the most recent
    await cache.get("c", lambda: Blob("c", 10))
    assert list(cache) == ["a", "c"]
    await cache.get("big", lambda: Blob("big", 95))
    assert list(cache) == ["big"]  # over the byte budget: only the newest stays
    assert cache.stats.evictions == 3


async def test_a_failed_load_is_not_cached(pool: ThreadPoolExecutor) -> None:
    cache: ModelCache[Blob] = ModelCache(pool)
    attempts = []

    def flaky() -> Blob:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("disk hiccup")
        return Blob("a", 1)

    with pytest.raises(RuntimeError):
        await cache.get("a", flaky)
    assert (await cache.get("a", flaky)).name == "a"
    assert len(attempts) == 2


async def test_evict_where(pool: ThreadPoolExecutor) -> None:
    cache: ModelCache[Blob] = ModelCache(pool)
    for key in ("models/m/versions/1@x", "models/m/versions/10@y", "models/n/versions/1@z"):
        await cache.get(key, lambda key=key: Blob(key, 1))
    assert cache.evict_where(lambda k: k.startswith("models/m/versions/1@")) == [
        "models/m/versions/1@x"
    ]
    assert len(cache) == 2


async def test_library_preload_is_a_readiness_check_that_skips_what_cannot_import() -> None:
    from arbor_ml.preload import LibraryPreload

    preload = LibraryPreload(("json", "no_such_library_for_arbor_tests"))
    assert await preload.ready()  # starts the thread, waits for it within the check
    assert preload.done.is_set()
    assert set(preload.seconds) == {"json"}
