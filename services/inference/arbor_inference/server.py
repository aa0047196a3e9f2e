"""Wiring: artifact store, registry client, caches, the event feed and the gRPC runner."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from arbor_core import metrics as arbor_metrics
from arbor_core.artifacts import open_store
from arbor_core.clients import service_channel
from arbor_core.config import Settings, env_flag
from arbor_core.events import (
    EVENTS_ROOT,
    EventSubscription,
    connect_nats,
    ensure_streams,
    subscribe_events,
)
from arbor_core.server import ServiceRunner, build_server
from arbor_inference import oip
from arbor_inference.api import register
from arbor_inference.domain import Inference, ServingOptions
from arbor_inference.resolver import RegistryClient, Resolver
from arbor_ml.preload import LibraryPreload

log = logging.getLogger("arbor.inference")

MODEL_EVENTS = f"{EVENTS_ROOT}.model.>"
PRELOAD_ENV = "ARBOR_INFERENCE_PRELOAD_LIBRARIES"


class EventFeed:
    """Keeps a subscription to ``model.*`` events alive and feeds them to the caches.

    Without events (NATS away) selectors would only refresh on their TTL, so while the feed
    is down the resolver's TTL drops to ``degraded_ttl`` seconds; after (re)subscribing,
    every cached selector is re-resolved, since events may have been missed meanwhile.
    """

    def __init__(
        self,
        settings: Settings,
        inference: Inference,
        *,
        retry_s: float = 2.0,
        degraded_ttl: float = 5.0,
    ) -> None:
        self.settings = settings
        self.inference = inference
        self.retry_s = retry_s
        self.normal_ttl = inference.resolver.ttl
        self.degraded_ttl = min(degraded_ttl, self.normal_ttl)
        self.subscription: EventSubscription | None = None
        self.subscribed = asyncio.Event()
        self._nc: Any = None

    def _degrade(self) -> None:
        self.subscribed.clear()
        self.inference.resolver.ttl = self.degraded_ttl

    async def _on_disconnected(self) -> None:
        log.warning("nats disconnected; model events paused, selectors refresh on a short TTL")
        self._degrade()

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected; re-resolving cached selectors")
        self.inference.resolver.ttl = self.normal_ttl
        self.subscribed.set()
        await self.inference.refresh_all()

    async def run(self) -> None:
        """Connect, subscribe, then wait; retry every ``retry_s`` while NATS is unreachable."""
        while True:
            try:
                self._nc = await connect_nats(
                    self.settings.nats_url,
                    name=f"arbor-inference-{id(self):x}",
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
                js = self._nc.jetstream()
                await ensure_streams(js, self.settings.nats_namespace)
                self.subscription = await subscribe_events(
                    js,
                    self.inference.handle_event,
                    pattern=MODEL_EVENTS,
                    namespace=self.settings.nats_namespace,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("model events unavailable (%s); retrying in %.1fs", exc, self.retry_s)
                self._degrade()
                await self._close_nc()
                await asyncio.sleep(self.retry_s)
                continue
            self.inference.resolver.ttl = self.normal_ttl
            self.subscribed.set()
            log.info("subscribed to %s", MODEL_EVENTS)
            await self.inference.refresh_all()
            await asyncio.Event().wait()  # until the runner cancels us at shutdown

    async def _close_nc(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.stop()
            self.subscription = None
        await self._close_nc()


def build_runner(settings: Settings, *, options: ServingOptions | None = None) -> ServiceRunner:
    """A ready-to-start inference server (``await runner.start()``; port 0 -> ephemeral).

    Ready as soon as the model libraries are imported (``LibraryPreload``; off with
    ``ARBOR_INFERENCE_PRELOAD_LIBRARIES=0``): models load on first use, and a missing NATS
    only slows how fast a promotion is seen (see ``EventFeed``), so neither blocks readiness.
    """
    options = options or ServingOptions.from_env()
    executor = ThreadPoolExecutor(options.workers, thread_name_prefix="arbor-inference")
    store = open_store(settings.artifact_uri)
    client = RegistryClient(
        lambda: service_channel("registry", settings, default_timeout=options.resolve_timeout_s),
        timeout=options.resolve_timeout_s,
    )
    inference = Inference(
        lambda prepare: Resolver(client, prepare, ttl=options.resolve_ttl_s),
        store,
        executor,
        options,
    )
    feed = EventFeed(settings, inference)
    arbor_metrics.observe_model_cache(inference.models)  # hits, misses, loads, ... per scrape

    async def close() -> None:
        await feed.stop()
        await inference.resolver.close()
        await client.close()
        executor.shutdown(wait=False, cancel_futures=True)

    readiness = []
    if env_flag(PRELOAD_ENV, True):
        preload = LibraryPreload()
        preload.start()
        readiness.append(preload.ready)
    runner = build_server(
        settings,
        oip.beside(register(inference), inference, lambda: runner),  # + KServe v2 (oip.py)
        readiness_checks=readiness,
        background_tasks=[feed.run],
        shutdown_hooks=[close],
    )
    runner.inference = inference  # type: ignore[attr-defined]  # for tests and tools
    runner.events = feed  # type: ignore[attr-defined]
    return runner
