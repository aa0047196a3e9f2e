"""Arbor's own metrics (beyond the per-RPC ones) and the Prometheus endpoint of each process.

**Named instruments.** Services record domain events with one-line calls, so that the names,
units and attributes live here and nowhere else::

    from arbor_core import metrics as arbor_metrics
    arbor_metrics.trial_recorded("complete", model_type="lightgbm", duration_s=1.2)
    arbor_metrics.experiment_finished("succeeded", duration_s=42.0)
    arbor_metrics.predictions_served(rows=100, model="credit")
    arbor_metrics.observe_model_cache(cache)   # anything with .stats: hits, loads, ...

Instruments (OpenTelemetry name -> Prometheus series; attributes):

* ``rpc.server.requests``, ``rpc.server.duration`` (ms) -> ``rpc_server_requests_total``,
  ``rpc_server_duration_milliseconds_*``; ``rpc_service``, ``rpc_method``,
  ``rpc_grpc_status_code`` (recorded by the server bootstrap for every RPC);
* ``arbor.training.trials`` -> ``arbor_training_trials_total``; ``state``, ``model_type``;
* ``arbor.training.trial.duration`` (s) -> ``arbor_training_trial_duration_seconds_*``;
* ``arbor.training.experiment.duration`` (s) -> ``arbor_training_experiment_duration_seconds_*``;
  ``state`` (the final one);
* ``arbor.inference.predictions`` (rows) -> ``arbor_inference_predictions_total``; ``model``,
  ``method``;
* ``arbor.inference.model_cache.{hits,misses,loads,evictions}`` -> ``..._total`` counters and
  ``arbor.inference.model_cache.{models,bytes}`` gauges, read from the cache's own counters at
  each collection (nothing on the hot path).

They come from the process-wide meter provider (the first ``configure_telemetry`` of the
process: in a service process, that service's), through the OpenTelemetry API's proxies, so
a call made before the provider is installed is not an error. ``ArborMetrics(provider)`` binds
the same instruments to an explicit provider (tests).

**Prometheus endpoint.** ``start_process_telemetry(component, host)`` (called by
``arbor_core.server.run_service`` and the training worker) serves ``GET /metrics`` on
``ARBOR_<COMPONENT>_METRICS_PORT``: defaults 9464 split, 9465 training, 9466 registry,
9467 inference, 9468 training worker (``ARBOR_TRAINING_WORKER_METRICS_PORT``); ``0`` turns it
off. It binds to ``ARBOR_METRICS_HOST``, else the service's own host. A port that is taken
does not stop the service (metrics are an aid, not its job): the log says so and the service
runs without the endpoint. Each endpoint has a registry of its own, so services sharing a
process never mix their series.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics.export import MetricReader

from arbor_core.errors import InvalidArgument
from arbor_core.telemetry import default_telemetry

log = logging.getLogger(__name__)

METRICS_PORT_BASE = 9464
#: Offsets from ``METRICS_PORT_BASE`` per process kind; the worker is ``training-worker``.
COMPONENTS = ("split", "training", "registry", "inference", "training-worker")
METRICS_HOST_ENV = "ARBOR_METRICS_HOST"
#: prediction counts buffered at most before they are handed to the counter inline
_MAX_PENDING = 4096


def metrics_port_env(component: str) -> str:
    """``ARBOR_<COMPONENT>_METRICS_PORT`` (``training-worker`` -> ``TRAINING_WORKER``)."""
    return f"ARBOR_{component.upper().replace('-', '_')}_METRICS_PORT"


def default_metrics_port(component: str) -> int:
    """The fixed default port of a component (9464 + its position in ``COMPONENTS``)."""
    return METRICS_PORT_BASE + COMPONENTS.index(component) if component in COMPONENTS else 0


def metrics_port(component: str) -> int:
    """The configured metrics port of ``component`` (0: no endpoint)."""
    name = metrics_port_env(component)
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default_metrics_port(component)
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise InvalidArgument(
            f"{name} must be a port number (0 turns the endpoint off), not {raw!r}",
            field=name,
            reason="METRICS_PORT_INVALID",
        )
    return port


# --- the Prometheus endpoint -----------------------------------------------------------------


class MetricsEndpoint:
    """``GET /metrics`` (Prometheus text format) over a collector registry of its own.

    ``reader`` is the OpenTelemetry metric reader to give the meter provider; each scrape
    collects from it, so there is no export interval and nothing is pushed anywhere.
    """

    def __init__(self, host: str, port: int) -> None:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        # Bind first: a taken port raises here, before anything is registered.
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port = int(self._server.server_port)
        self.reader: MetricReader = PrometheusMetricReader(registry=self.registry)
        self._stopped = False

    @property
    def url(self) -> str:
        host = self.host
        if host in {"0.0.0.0", "::", ""}:
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve_metrics(component: str, host: str = "127.0.0.1") -> MetricsEndpoint | None:
    """The component's endpoint on its configured port, or None when it is off (port 0), the
    exporter packages are missing, or the port is taken (both logged)."""
    port = metrics_port(component)
    if port == 0:
        return None
    bind_host = os.environ.get(METRICS_HOST_ENV, "").strip() or host
    try:
        endpoint = MetricsEndpoint(bind_host, port)
    except ImportError as exc:
        log.warning(
            "no Prometheus endpoint: %s (needs opentelemetry-exporter-prometheus and "
            "prometheus-client)",
            exc,
            extra={"component": component},
        )
        return None
    except OSError as exc:
        log.warning(
            "no Prometheus endpoint: cannot listen on %s:%s (%s); set %s to another port or 0",
            bind_host,
            port,
            exc.strerror or exc,
            metrics_port_env(component),
            extra={"component": component, "port": port},
        )
        return None
    log.info("metrics at %s", endpoint.url, extra={"component": component, "url": endpoint.url})
    return endpoint


def start_process_telemetry(component: str, host: str = "127.0.0.1") -> MetricsEndpoint | None:
    """A process's telemetry: the exporter ``ARBOR_OTEL_EXPORTER`` names plus the Prometheus
    endpoint, installed as the process default for ``component``. Returns the endpoint (to
    ``stop()`` at exit), or None when there is none."""
    endpoint = serve_metrics(component, host)
    default_telemetry(component, extra_metric_readers=[endpoint.reader] if endpoint else ())
    return endpoint


# --- named instruments ---------------------------------------------------------------------


class CacheStatsLike(Protocol):
    hits: int
    misses: int
    loads: int
    evictions: int
    models: int
    bytes: int


class StatsSource(Protocol):
    """A cache whose ``stats`` (a property or a method) gives its counters."""

    @property
    def stats(self) -> Any: ...


def _stats_of(cache: Any) -> CacheStatsLike:
    stats = cache.stats
    return stats() if callable(stats) else stats  # type: ignore[no-any-return]


class ArborMetrics:
    """The named instruments, on ``meter_provider`` (default: the process-wide one)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider or metrics.get_meter_provider()
        meter = provider.get_meter("arbor")
        self._caches: weakref.WeakSet[Any] = weakref.WeakSet()
        self._prediction_attributes: dict[tuple[str, str], dict[str, str]] = {}
        self._lock = threading.Lock()
        self.trials = meter.create_counter(
            "arbor.training.trials",
            unit="{trial}",
            description="Trials finished and recorded, by state (complete, pruned, failed)",
        )
        self.trial_duration = meter.create_histogram(
            "arbor.training.trial.duration", unit="s", description="Duration of a finished trial"
        )
        self.experiment_duration = meter.create_histogram(
            "arbor.training.experiment.duration",
            unit="s",
            description="Experiment start (or creation) to its final state, by final state",
        )
        self.predictions = meter.create_counter(
            "arbor.inference.predictions",
            unit="{row}",
            description="Rows predicted, by model name and method",
        )
        # Predict's hot path only appends here; collections hand the rows to the counter
        # (asynchronous callbacks run before the instruments are read).
        self._pending_predictions: deque[tuple[dict[str, str], int]] = deque()
        meter.create_observable_gauge(
            "arbor.inference.predictions.pending",
            callbacks=[self._flush_callback],
            description="internal: moves buffered prediction counts in; reports nothing",
        )
        for field, unit, description in (
            ("hits", "{lookup}", "Model lookups answered from the cache"),
            ("misses", "{lookup}", "Model lookups that had to wait for a load"),
            ("loads", "{model}", "Model bundles loaded from the artifact store"),
            ("evictions", "{model}", "Models dropped from the cache (LRU)"),
        ):
            meter.create_observable_counter(
                f"arbor.inference.model_cache.{field}",
                callbacks=[self._cache_callback(field)],
                unit=unit,
                description=description,
            )
        meter.create_observable_gauge(
            "arbor.inference.model_cache.models",
            callbacks=[self._cache_callback("models")],
            unit="{model}",
            description="Models held in the cache",
        )
        meter.create_observable_gauge(
            "arbor.inference.model_cache.bytes",
            callbacks=[self._cache_callback("bytes")],
            unit="By",
            description="Approximate memory of the cached models",
        )

    def _cache_callback(self, field: str) -> Any:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            with self._lock:
                caches = list(self._caches)
            if not caches:
                return []
            total = 0
            for cache in caches:
                try:
                    total += int(getattr(_stats_of(cache), field))
                except Exception:  # a cache being torn down: skip it this round
                    log.debug("model cache stats unavailable", exc_info=True)
            return [Observation(total)]

        return observe

    def observe_model_cache(self, cache: StatsSource) -> None:
        with self._lock:
            self._caches.add(cache)

    def trial_recorded(
        self, state: str, *, model_type: str = "", duration_s: float | None = None
    ) -> None:
        attributes = {"state": state.lower(), "model_type": model_type.lower()}
        self.trials.add(1, attributes)
        if duration_s is not None and duration_s >= 0:
            self.trial_duration.record(duration_s, attributes)

    def experiment_finished(self, state: str, *, duration_s: float | None = None) -> None:
        if duration_s is not None and duration_s >= 0:
            self.experiment_duration.record(duration_s, {"state": state.lower()})

    def predictions_served(self, rows: int, *, model: str, method: str = "predict") -> None:
        if rows > 0:
            # one attributes dict per (model, method), not one per call: this is on Predict's
            # hot path (bounded: the model cache holds a few models)
            key = (model, method)
            attributes = self._prediction_attributes.get(key)
            if attributes is None:
                if len(self._prediction_attributes) > 1024:
                    self._prediction_attributes.clear()
                attributes = self._prediction_attributes[key] = {"model": model, "method": method}
            pending = self._pending_predictions
            pending.append((attributes, rows))
            if len(pending) > _MAX_PENDING:  # nothing collects (no reader): keep it bounded
                self.flush_predictions()

    def flush_predictions(self) -> None:
        """Move buffered prediction counts into the counter (thread-safe)."""
        pending = self._pending_predictions
        totals: dict[int, list[Any]] = {}
        while True:
            try:
                attributes, rows = pending.popleft()
            except IndexError:
                break
            entry = totals.get(id(attributes))
            if entry is None:
                totals[id(attributes)] = [attributes, rows]
            else:
                entry[1] += rows
        for attributes, rows in totals.values():
            self.predictions.add(rows, attributes)

    def _flush_callback(self, _options: CallbackOptions) -> Iterable[Observation]:
        self.flush_predictions()
        return ()


_default: ArborMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> ArborMetrics:
    """The process-wide instruments (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = ArborMetrics()
    return _default


def trial_recorded(state: str, *, model_type: str = "", duration_s: float | None = None) -> None:
    """One trial finished and was recorded (``state``: complete, pruned or failed)."""
    default_metrics().trial_recorded(state, model_type=model_type, duration_s=duration_s)


def experiment_finished(state: str, *, duration_s: float | None = None) -> None:
    """An experiment reached a final state after ``duration_s`` seconds."""
    default_metrics().experiment_finished(state, duration_s=duration_s)


def predictions_served(rows: int, *, model: str, method: str = "predict") -> None:
    """``rows`` predictions were returned by ``model`` (its name, not the version)."""
    default_metrics().predictions_served(rows, model=model, method=method)


def observe_model_cache(cache: StatsSource) -> None:
    """Report ``cache.stats`` (hits, misses, loads, evictions, models, bytes; a property or a
    method) at each collection; held weakly, and summed over every cache of the process."""
    default_metrics().observe_model_cache(cache)


__all__: Sequence[str] = (
    "COMPONENTS",
    "ArborMetrics",
    "MetricsEndpoint",
    "default_metrics",
    "experiment_finished",
    "metrics_port",
    "observe_model_cache",
    "predictions_served",
    "serve_metrics",
    "start_process_telemetry",
    "trial_recorded",
)
