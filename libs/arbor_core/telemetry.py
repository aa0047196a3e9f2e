"""OpenTelemetry setup and W3C trace-context propagation for gRPC metadata and events.

Traces and metrics are always produced (so logs carry real trace ids and a trace started by a
caller continues here); where they go is chosen by ``ARBOR_OTEL_EXPORTER``:

* unset / ``none``: nowhere (spans are still created, then dropped);
* ``console``: printed to stdout by the SDK's console exporters (logs stay on stderr);
* ``otlp``: the OTLP exporters, which are **not installed** in this project
  (``opentelemetry-exporter-otlp`` would have to be added); asking for them fails at start-up
  with a clear error rather than silently exporting nothing. ``_otlp_exporters`` is the hook.

Besides, each service process serves its metrics in Prometheus format on a port of its own
(``arbor_core.metrics``), whatever the exporter.

The first ``configure_telemetry`` call of a process also installs its providers globally (the
OpenTelemetry API allows that once); later calls, e.g. tests with in-memory exporters, get
providers of their own that the server bootstrap uses explicitly. While a server handles an
RPC its ``Telemetry`` is the *current* one (``current_telemetry``), so outbound calls made for
that RPC record their CLIENT spans with the same providers, also when several services share
one process (tests).

Traces cross process boundaries in two carriers: the W3C ``traceparent`` gRPC metadata
(``arbor_core.clients`` adds it, the server interceptor continues it) and the ``trace_parent``
field of event envelopes and training jobs (``continue_trace`` around their handlers).
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanProcessor,
)
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from arbor_core.errors import FailedPrecondition

log = logging.getLogger(__name__)

EXPORTER_ENV = "ARBOR_OTEL_EXPORTER"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_PROPAGATOR = TraceContextTextMapPropagator()
_METRIC_EXPORT_INTERVAL_MS = 60_000
#: RPC measurements buffered at most before they are handed to the instruments inline
_MAX_PENDING_RPCS = 4096

_global_installed = False
_default: dict[str, Telemetry] = {}
# The telemetry of the service handling the current RPC (set by the server interceptor; each
# grpc.aio call runs in a context of its own, so it never leaks into another call).
_current: ContextVar[Telemetry | None] = ContextVar("arbor_telemetry", default=None)
_global_client_tracer = trace.get_tracer("arbor_core.clients")


@dataclass
class Telemetry:
    """A service's tracer and RPC instruments, backed by providers it owns."""

    service: str
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    tracer: trace.Tracer = field(init=False)
    client_tracer: trace.Tracer = field(init=False)
    request_counter: metrics.Counter = field(init=False)
    duration_ms: metrics.Histogram = field(init=False)
    _pending: deque[tuple[Mapping[str, Any], float]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tracer = self.tracer_provider.get_tracer("arbor_core.server")
        self.client_tracer = self.tracer_provider.get_tracer("arbor_core.clients")
        meter = self.meter_provider.get_meter("arbor_core.server")
        self.request_counter = meter.create_counter(
            "rpc.server.requests", unit="{request}", description="RPCs handled, by method and code"
        )
        self.duration_ms = meter.create_histogram(
            "rpc.server.duration", unit="ms", description="RPC duration, by method and code"
        )
        self._pending = deque()
        # Collections run asynchronous callbacks before reading the instruments: this one
        # hands the RPCs recorded since the last collection to the two instruments above.
        meter.create_observable_gauge(
            "arbor.rpc.server.pending",
            callbacks=[self._flush_callback],
            description="internal: moves buffered RPC measurements in; reports nothing",
        )

    def record_rpc(self, attributes: Mapping[str, Any], elapsed_ms: float) -> None:
        """One finished RPC for ``rpc.server.requests`` and ``rpc.server.duration``.

        The SDK's per-measurement work (~10 us per instrument) is not done here, on the
        request path, but when a reader collects; ``attributes`` must not be mutated after.
        """
        pending = self._pending
        pending.append((attributes, elapsed_ms))
        if len(pending) > _MAX_PENDING_RPCS:  # nothing collects (no reader): keep it bounded
            self.flush_rpcs()

    def flush_rpcs(self) -> None:
        """Move buffered RPC measurements into the instruments (thread-safe)."""
        pending = self._pending
        counts: dict[int, list[Any]] = {}
        while True:
            try:
                attributes, elapsed_ms = pending.popleft()
            except IndexError:
                break
            self.duration_ms.record(elapsed_ms, attributes)
            entry = counts.get(id(attributes))
            if entry is None:
                counts[id(attributes)] = [attributes, 1]
            else:
                entry[1] += 1
        for attributes, count in counts.values():
            self.request_counter.add(count, attributes)

    def _flush_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        self.flush_rpcs()
        return ()

    def records_spans(self) -> bool:
        """Whether a finished span goes anywhere (a span processor is configured).

        Without one, the server makes a non-recording span current instead of building a
        full SDK span that would be dropped. Read per call: processors may be added later.
        """
        active = getattr(self.tracer_provider, "_active_span_processor", None)
        processors = getattr(active, "_span_processors", None)
        return processors is None or bool(processors)

    def flush(self) -> None:
        """Push buffered spans and metrics out (called on shutdown)."""
        self.flush_rpcs()
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _otlp_exporters() -> tuple[SpanExporter, MetricReader]:
    """Hook for OTLP: wire it here once ``opentelemetry-exporter-otlp`` is a dependency."""
    try:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise FailedPrecondition(
            f"{EXPORTER_ENV}=otlp needs the opentelemetry-exporter-otlp package, "
            "which is not installed",
            reason="OTEL_EXPORTER_UNAVAILABLE",
            metadata={"exporter": "otlp"},
        ) from exc
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(), export_interval_millis=_METRIC_EXPORT_INTERVAL_MS
    )
    return OTLPSpanExporter(), reader


def _exporters_from_env(name: str | None) -> tuple[list[SpanProcessor], list[MetricReader]]:
    choice = (name if name is not None else os.environ.get(EXPORTER_ENV, "none")).strip().lower()
    if choice in {"", "none"}:
        return [], []
    if choice == "console":
        reader = PeriodicExportingMetricReader(
            ConsoleMetricExporter(), export_interval_millis=_METRIC_EXPORT_INTERVAL_MS
        )
        return [BatchSpanProcessor(ConsoleSpanExporter())], [reader]
    if choice == "otlp":
        span_exporter, otlp_reader = _otlp_exporters()
        return [BatchSpanProcessor(span_exporter)], [otlp_reader]
    raise FailedPrecondition(
        f"unknown {EXPORTER_ENV} {choice!r}; use none, console or otlp",
        reason="OTEL_EXPORTER_UNKNOWN",
        metadata={"exporter": choice},
    )


def configure_telemetry(
    service: str,
    *,
    exporter: str | None = None,
    span_processors: Sequence[SpanProcessor] | None = None,
    metric_readers: Sequence[MetricReader] | None = None,
    extra_metric_readers: Sequence[MetricReader] = (),
    install_global: bool = True,
) -> Telemetry:
    """Build tracer and meter providers for ``service``.

    ``exporter`` overrides ``ARBOR_OTEL_EXPORTER``; explicit ``span_processors`` /
    ``metric_readers`` (tests: in-memory ones) replace the exporter choice entirely.
    ``extra_metric_readers`` are added in either case (the Prometheus endpoint's reader).
    ``install_global`` makes the first such call the process-wide provider (used by outbound
    client spans outside any RPC, by ``arbor_core.metrics`` and by libraries); tests pass
    False to stay isolated.
    """
    global _global_installed
    if span_processors is None and metric_readers is None:
        processors, readers = _exporters_from_env(exporter)
    else:
        processors, readers = list(span_processors or []), list(metric_readers or [])
    readers = [*readers, *extra_metric_readers]
    resource = Resource.create(
        {"service.name": f"arbor-{service}", "service.namespace": "arbor", "arbor.service": service}
    )
    tracer_provider = TracerProvider(resource=resource)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    if install_global and not _global_installed:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        _global_installed = True
    return Telemetry(service, tracer_provider, meter_provider)


def default_telemetry(
    service: str, *, extra_metric_readers: Sequence[MetricReader] = ()
) -> Telemetry:
    """The process's telemetry for ``service``, configured from the environment on first use
    (``extra_metric_readers`` only count on that first call)."""
    if service not in _default:
        _default[service] = configure_telemetry(service, extra_metric_readers=extra_metric_readers)
    elif extra_metric_readers:
        log.warning(
            "telemetry for %s was configured already; extra metric readers ignored", service
        )
    return _default[service]


def use_telemetry(service: str, telemetry: Telemetry | None) -> None:
    """Make ``telemetry`` what servers of ``service`` built from now on in this process use
    (``None``: back to the environment's). For tests that run several services in one process
    with shared in-memory providers, so one trace can be followed across them."""
    if telemetry is None:
        _default.pop(service, None)
    else:
        _default[service] = telemetry


def set_current(telemetry: Telemetry) -> None:
    """Mark ``telemetry`` as the one of the RPC being handled (no reset: see ``_current``)."""
    _current.set(telemetry)


def current_telemetry() -> Telemetry | None:
    """The telemetry of the service whose RPC is being handled, if any."""
    return _current.get()


def client_tracer() -> trace.Tracer:
    """The tracer for outbound calls: the current service's, else the process-wide one."""
    telemetry = _current.get()
    return telemetry.client_tracer if telemetry is not None else _global_client_tracer


@contextmanager
def continue_trace(
    name: str,
    trace_parent: str,
    *,
    kind: SpanKind = SpanKind.CONSUMER,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Iterator[Span]:
    """A span, current for the block, that continues the trace an envelope's ``trace_parent``
    names (an event, a training job); a new trace when it is empty or malformed.

    What the block calls (gRPC clients, new events) then carries the same trace onwards.
    """
    parent = context_from_traceparent(trace_parent) if trace_parent else Context()
    telemetry = _current.get()
    tracer = telemetry.tracer if telemetry is not None else trace.get_tracer("arbor_core.events")
    with tracer.start_as_current_span(
        name, context=parent, kind=kind, attributes=dict(attributes or {})
    ) as span:
        yield span


# --- W3C trace context ---------------------------------------------------------------------


def _carrier(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if key in (TRACEPARENT, TRACESTATE):
            carrier[key] = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    return carrier


def extract_context(metadata: Iterable[tuple[str, Any]] | None) -> Context:
    """The remote parent named by ``traceparent`` in gRPC metadata (an empty context if none)."""
    return _PROPAGATOR.extract(_carrier(metadata))


def context_from_traceparent(traceparent: str, tracestate: str = "") -> Context:
    """A context continuing the trace of an event envelope's ``traceparent``."""
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    return _PROPAGATOR.extract(carrier)


def trace_headers(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) for the current or given context; empty if none."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def current_traceparent() -> str:
    """The current span as a W3C ``traceparent`` string, or ``""`` outside any span."""
    return trace_headers().get(TRACEPARENT, "")


def inject_metadata(
    metadata: Iterable[tuple[str, Any]] | None = None, context: Context | None = None
) -> list[tuple[str, Any]]:
    """Outgoing gRPC metadata with the trace context added (existing values are kept)."""
    pairs = list(metadata or ())
    present = {key for key, _ in pairs}
    pairs.extend((k, v) for k, v in trace_headers(context).items() if k not in present)
    return pairs


def unrecorded_span(parent: Context | None) -> Span:
    """A non-recording span with fresh, valid ids: a child of ``parent``'s span when it has
    one, else a new (sampled) trace, as the SDK's default sampler would make. Logs and
    outbound calls see the same trace context as with a recorded span, for a fraction of
    the cost."""
    parent_context = trace.get_current_span(parent).get_span_context() if parent else None
    span_id = random.getrandbits(64) or 1
    if parent_context is not None and parent_context.is_valid:
        ids = SpanContext(
            parent_context.trace_id,
            span_id,
            is_remote=False,
            trace_flags=parent_context.trace_flags,
            trace_state=parent_context.trace_state,
        )
    else:
        ids = SpanContext(
            random.getrandbits(128) or 1,
            span_id,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    return NonRecordingSpan(ids)


def attach(context: Context) -> object:
    """Make ``context`` current (returns the token for ``otel_context.detach``)."""
    return otel_context.attach(context)


def rpc_attributes(full_method: str) -> Mapping[str, str]:
    """OpenTelemetry RPC semantic-convention attributes for ``/pkg.Service/Method``."""
    service, _, method = full_method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
