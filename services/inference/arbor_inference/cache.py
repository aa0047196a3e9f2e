"""Loaded model bundles, kept in an LRU bounded by count and by memory.

A bundle is loaded once per version (downloads and checksum checks happen in the loader,
on the thread pool, never on the event loop); callers that ask for a version being loaded
wait for that one load instead of starting their own. Eviction only drops the cache's
reference: a request that already holds a model keeps using it until it answers, so
evicting (or swapping) never fails a call in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("arbor.inference.cache")


class Sized(Protocol):
    """What the cache needs from a loaded model: its approximate resident size."""

    @property
    def nbytes(self) -> int: ...


M = TypeVar("M", bound=Sized)


@dataclass(frozen=True)
class CacheStats:
    models: int
    bytes: int
    hits: int
    misses: int
    loads: int
    evictions: int


class ModelCache(Generic[M]):
    """``await get(key, load)``: the cached model, or the result of one ``load()`` on ``executor``.

    ``key`` identifies immutable content (a version name plus its checksums), so an entry
    never goes stale, it is only evicted: by LRU when over ``max_models`` or ``max_bytes``
    (the newest entry always stays, even if it alone is over the byte budget), or by
    ``evict``/``evict_where`` when the registry archives or deletes a version.
    """

    def __init__(self, executor: Executor, *, max_models: int = 16, max_bytes: int = 2 << 30):
        if max_models < 1:
            raise ValueError("max_models must be >= 1")
        self._executor = executor
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, M] = OrderedDict()
        self._loading: dict[str, asyncio.Future[M]] = {}
        self._bytes = 0
        self._hits = self._misses = self._loads = self._evictions = 0

    # -- lookups ---------------------------------------------------------------------

    def peek(self, key: str) -> M | None:
        """The model if it is loaded (and mark it recently used); never loads. Hot path."""
        model = self._entries.get(key)
        if model is not None:
            self._entries.move_to_end(key)
            self._hits += 1
        return model

    async def get(self, key: str, load: Callable[[], M]) -> M:
        """The model for ``key``, loading it with ``load`` (in the executor) when absent."""
        model = self.peek(key)
        if model is not None:
            return model
        self._misses += 1
        pending = self._loading.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._loading[key] = pending
            asyncio.get_running_loop().create_task(self._load(key, load, pending))
        # shield: one caller giving up (deadline) must not cancel the load others wait for
        return await asyncio.shield(pending)

    async def _load(self, key: str, load: Callable[[], M], future: asyncio.Future[M]) -> None:
        try:
            model = await asyncio.get_running_loop().run_in_executor(self._executor, load)
        except BaseException as exc:  # the waiters get it; nothing is cached
            self._loading.pop(key, None)
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: nobody may be waiting any more
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self._loads += 1
        self._loading.pop(key, None)
        self._put(key, model)
        if not future.done():
            future.set_result(model)

    def _put(self, key: str, model: M) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[key] = model
        self._bytes += model.nbytes
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_models or self._bytes > self.max_bytes
        ):
            evicted_key, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self._evictions += 1
            log.info("evicted model %s (LRU)", evicted_key, extra={"model_key": evicted_key})

    # -- eviction ------------------------------------------------------------------------

    def evict(self, key: str) -> bool:
        model = self._entries.pop(key, None)
        if model is None:
            return False
        self._bytes -= model.nbytes
        self._evictions += 1
        return True

    def evict_where(self, predicate: Callable[[str], bool]) -> list[str]:
        """Evict every key for which ``predicate(key)`` holds; returns them."""
        keys = [key for key in self._entries if predicate(key)]
        for key in keys:
            self.evict(key)
        return keys

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> CacheStats:
        return CacheStats(
            models=len(self._entries),
            bytes=self._bytes,
            hits=self._hits,
            misses=self._misses,
            loads=self._loads,
            evictions=self._evictions,
        )
