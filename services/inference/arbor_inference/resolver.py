"""Selector -> model version, through the registry's ResolveModel, cached per selector.

Once a selector is resolved, calls find its version with one dict lookup: no registry round
trip per call. The cache stays right in three ways:

* **events** (``refresh_model``): on any ``model.*`` event for a model, every cached selector
  of that model is resolved again; when one now names another version, the new version is
  *prepared* (its bundle loaded) first and the pointer swapped after, so a call sees the old
  version or the new one, never a failure or a half-loaded model.
* **a time to live** (``ttl``, a safety net for missed events): a stale entry keeps answering
  while one background refresh runs (stale-while-revalidate), so expiry costs no latency.
* **sequence numbers**: every resolution takes a number when it starts and only replaces an
  entry older than itself, so a slow first-call resolution can never overwrite what a later
  event installed.

A refresh that cannot reach the registry, or whose new version fails to load, keeps the old
entry (it retries later) -- the answer still says exactly which version served it. A selector
the registry no longer resolves (deleted version, removed alias) is dropped, so the next call
gets the registry's NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2, registry_service_pb2_grpc
from arbor_core.errors import (
    ArborError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from arbor_core.status_details import error_details

log = logging.getLogger("arbor.inference.resolver")

Stage = common_pb2.ModelStage
_STAGE_NAMES = {
    Stage.MODEL_STAGE_NONE: "NONE",
    Stage.MODEL_STAGE_STAGING: "STAGING",
    Stage.MODEL_STAGE_PRODUCTION: "PRODUCTION",
    Stage.MODEL_STAGE_ARCHIVED: "ARCHIVED",
}


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True, slots=True)
class Selector:
    """A hashable selector: ``kind`` is version, experiment, stage or alias.

    ``model`` is the model name (stage, alias), the version resource name (version) or the
    experiment resource name (experiment); ``value`` is the stage (an int) or the alias.
    """

    kind: str
    model: str
    value: Any = None

    @property
    def model_name(self) -> str | None:
        """The model this selector is about, when the selector itself says so."""
        if self.kind in ("stage", "alias"):
            return self.model
        if self.kind == "version":
            return self.model.split("/")[1]
        return None

    def to_proto(self) -> common_pb2.ModelSelector:
        if self.kind == "version":
            return common_pb2.ModelSelector(model_version=self.model)
        if self.kind == "experiment":
            return common_pb2.ModelSelector(experiment=self.model)
        if self.kind == "stage":
            return common_pb2.ModelSelector(
                stage=common_pb2.StageSelector(model=self.model, stage=self.value)
            )
        return common_pb2.ModelSelector(
            alias=common_pb2.AliasSelector(model=self.model, alias=self.value)
        )

    def __str__(self) -> str:
        if self.kind == "stage":
            return f"models/{self.model} in stage {_STAGE_NAMES.get(self.value, self.value)}"
        if self.kind == "alias":
            return f"models/{self.model}@{self.value}"
        return self.model


def _bad_selector(message: str, field_path: str) -> InvalidArgument:
    return InvalidArgument(message, field=field_path, reason="INVALID_SELECTOR")


def selector_from_proto(message: common_pb2.ModelSelector, field_path: str = "model") -> Selector:
    """Validate the shape locally (cheap, and the error names the request field)."""
    kind = message.WhichOneof("selector")
    if kind is None:
        raise InvalidArgument(
            "a model selector is required", field=field_path, reason="SELECTOR_REQUIRED"
        )
    if kind == "model_version":
        name = message.model_version
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != "models" or parts[2] != "versions" or not parts[1]:
            raise _bad_selector(
                f"expected 'models/{{model}}/versions/{{version}}', got {name[:200]!r}",
                f"{field_path}.model_version",
            )
        if not parts[3].isdigit() or int(parts[3]) < 1:
            raise _bad_selector(
                f"version must be a positive integer, got {parts[3][:40]!r}",
                f"{field_path}.model_version",
            )
        return Selector("version", f"models/{parts[1]}/versions/{int(parts[3])}")
    if kind == "experiment":
        name = message.experiment
        if not name.startswith("experiments/") or len(name) <= len("experiments/"):
            raise _bad_selector(
                f"expected 'experiments/{{id}}', got {name[:200]!r}", f"{field_path}.experiment"
            )
        return Selector("experiment", name)
    if kind == "stage":
        model = message.stage.model.removeprefix("models/")
        if not model:
            raise _bad_selector("model name is required", f"{field_path}.stage.model")
        stage = message.stage.stage or Stage.MODEL_STAGE_PRODUCTION
        if stage not in _STAGE_NAMES:
            raise _bad_selector(f"unknown stage {stage}", f"{field_path}.stage.stage")
        return Selector("stage", model, int(stage))
    model = message.alias.model.removeprefix("models/")
    if not model:
        raise _bad_selector("model name is required", f"{field_path}.alias.model")
    if not message.alias.alias:
        raise _bad_selector("alias is required", f"{field_path}.alias.alias")
    return Selector("alias", model, message.alias.alias)


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True, eq=False)
class ResolvedVersion:
    """A registry version as the service needs it; ``key`` names its immutable content."""

    name: str
    model: str
    version: int
    stage: int
    experiment: str
    model_type: int
    task_type: int
    message: registry_service_pb2.ModelVersion = field(repr=False)
    key: str = ""

    @classmethod
    def from_proto(cls, message: registry_service_pb2.ModelVersion) -> ResolvedVersion:
        digest = hashlib.sha256()
        digest.update(message.artifact_uri.encode())
        for file_name in sorted(message.artifact_checksums):
            digest.update(f"\0{file_name}\0{message.artifact_checksums[file_name]}".encode())
        return cls(
            name=message.name,
            model=message.model,
            version=message.version,
            stage=message.stage,
            experiment=message.experiment,
            model_type=message.model_type,
            task_type=message.task_type,
            message=message,
            key=f"{message.name}@{digest.hexdigest()[:16]}",
        )


@dataclass(slots=True)
class _Entry:
    version: ResolvedVersion
    seq: int
    fetched_at: float
    refreshing: bool = False


Prepare = Callable[[ResolvedVersion], Awaitable[Any]]


class RegistryClient:
    """ResolveModel with a deadline; the channel retries UNAVAILABLE (the RPC is read-only).

    The channel is opened on first use, inside the running event loop.
    """

    def __init__(self, channel: Callable[[], grpc.aio.Channel], timeout: float = 5.0) -> None:
        self._open = channel
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_service_pb2_grpc.RegistryServiceStub | None = None
        self.timeout = timeout

    def _get_stub(self) -> registry_service_pb2_grpc.RegistryServiceStub:
        if self._stub is None:
            self._channel = self._open()
            self._stub = registry_service_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def resolve(self, selector: Selector, timeout: float | None = None) -> ResolvedVersion:
        limit = self.timeout if timeout is None else max(0.001, min(timeout, self.timeout))
        request = registry_service_pb2.ResolveModelRequest(selector=selector.to_proto())
        stub = self._get_stub()
        try:
            response = await stub.ResolveModel(request, timeout=limit)
        except grpc.aio.AioRpcError as exc:
            raise _registry_error(exc, selector) from None
        return ResolvedVersion.from_proto(response.model_version)


def _registry_error(exc: grpc.aio.AioRpcError, selector: Selector) -> ArborError:
    """The registry's answer as our own error, keeping its reason for the caller."""
    code = exc.code()
    details = error_details(exc)
    reason = details.get("reason") or None
    message = details.get("message") or exc.details() or code.name
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(
            "model_version",
            str(selector),
            f"no model version matches {selector}",
            reason=reason or "MODEL_VERSION_NOT_FOUND",
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(f"invalid selector: {message}", field="model", reason=reason)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(message, reason=reason)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"the registry did not resolve {selector} in time", reason="REGISTRY_DEADLINE_EXCEEDED"
        )
    return Unavailable(
        f"the registry could not resolve {selector}: {code.name}",
        reason="REGISTRY_UNAVAILABLE",
        metadata={"registry_code": code.name},
    )


# --------------------------------------------------------------------------- resolver


class Resolver:
    """Cached selector resolution; ``prepare`` loads a version before a refresh swaps to it."""

    def __init__(
        self,
        client: RegistryClient,
        prepare: Prepare,
        *,
        ttl: float = 60.0,
        retry_after: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._prepare = prepare
        self.ttl = ttl
        self.retry_after = retry_after
        self._clock = clock
        self._entries: dict[Selector, _Entry] = {}
        self._seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.refreshes = 0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- the hot path ---------------------------------------------------------------------

    def lookup(self, selector: Selector) -> ResolvedVersion | None:
        """The cached version, or None; a stale entry answers and starts a background refresh."""
        entry = self._entries.get(selector)
        if entry is None:
            return None
        if not entry.refreshing and self._clock() - entry.fetched_at > self.ttl:
            entry.refreshing = True
            self._spawn(self._refresh(selector))
        return entry.version

    async def resolve(self, selector: Selector, timeout: float | None = None) -> ResolvedVersion:
        """Cached, else one ResolveModel call (whose result is cached)."""
        cached = self.lookup(selector)
        if cached is not None:
            return cached
        seq = self._next_seq()
        version = await self._client.resolve(selector, timeout)
        self._install(selector, version, seq)
        return self._entries[selector].version

    def _install(self, selector: Selector, version: ResolvedVersion, seq: int) -> bool:
        entry = self._entries.get(selector)
        if entry is not None and entry.seq > seq:
            return False
        self._entries[selector] = _Entry(version, seq, self._clock())
        return True

    # -- refreshing -------------------------------------------------------------------------

    async def _refresh(self, selector: Selector) -> None:
        """Resolve again; load a new version before swapping; drop what no longer resolves."""
        seq = self._next_seq()
        self.refreshes += 1
        try:
            version = await self._client.resolve(selector)
        except NotFound:
            entry = self._entries.get(selector)
            if entry is not None and entry.seq < seq:
                del self._entries[selector]
                log.info("selector %s no longer resolves; dropped", selector)
            return
        except ArborError as exc:
            self._retry_later(selector, seq, exc)
            return
        current = self._entries.get(selector)
        if current is not None and current.version.key != version.key:
            try:
                await self._prepare(version)
            except Exception as exc:
                self._retry_later(selector, seq, exc)
                return
            log.info(
                "selector %s now serves %s (was %s)",
                selector,
                version.name,
                current.version.name,
                extra={"selector": str(selector), "model_version": version.name},
            )
        if not self._install(selector, version, seq):
            return
        entry = self._entries[selector]
        entry.refreshing = False

    def _retry_later(self, selector: Selector, seq: int, exc: BaseException) -> None:
        entry = self._entries.get(selector)
        log.warning(
            "refreshing selector %s failed, keeping %s: %s",
            selector,
            entry.version.name if entry else None,
            exc,
            extra={"selector": str(selector)},
        )
        if entry is not None and entry.seq < seq:
            # answer on, and try again after retry_after instead of after a full ttl
            entry.fetched_at = self._clock() - self.ttl + self.retry_after
            entry.refreshing = False

    async def refresh_model(self, model: str) -> None:
        """Re-resolve (concurrently) every cached selector that concerns ``model``."""
        selectors = [
            sel
            for sel, entry in self._entries.items()
            if sel.model_name == model or entry.version.model == model
        ]
        for selector in selectors:
            entry = self._entries.get(selector)
            if entry is not None:
                entry.refreshing = True
        if selectors:
            await asyncio.gather(*(self._refresh(sel) for sel in selectors))

    def models(self) -> set[str]:
        """Names of the models some cached selector concerns."""
        return {entry.version.model for entry in self._entries.values()}

    def versions_in_use(self) -> set[str]:
        """Version names some cached selector points at."""
        return {entry.version.name for entry in self._entries.values()}

    def forget(self, selector: Selector) -> None:
        self._entries.pop(selector, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    # -- background tasks -------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
