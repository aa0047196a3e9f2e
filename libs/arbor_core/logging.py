"""Structured JSON logs: one object per line on stderr, every line inside an RPC tagged.

The request id lives in a contextvar that the server's request-id interceptor sets, and the
trace and span ids come from OpenTelemetry's current span (itself a contextvar set by the
telemetry interceptor), so any ``logging.getLogger(__name__).info(...)`` inside a call carries
them without the caller passing anything. A filter copies them onto the record at emit time,
so a queued handler would still see the values of the emitting task.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import IO, Any

from opentelemetry import trace

request_id_var: ContextVar[str | None] = ContextVar("arbor_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}
_CONTEXT_FIELDS = ("service", "request_id", "trace_id", "span_id")
_HANDLER_MARK = "_arbor_json_handler"
_NOISY_LOGGERS = ("grpc._cython.cygrpc",)


def get_request_id() -> str | None:
    """The id of the request being served by the current task, if any."""
    return request_id_var.get()


def set_request_id(request_id: str | None) -> Token[str | None]:
    """Set the current request id; returns the token to reset it."""
    return request_id_var.set(request_id)


@contextmanager
def request_id_scope(request_id: str | None) -> Iterator[None]:
    """Run a block (a job, an event handler) under a request id, restoring the old one after."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def current_trace_ids() -> tuple[str | None, str | None]:
    """(trace_id, span_id) of the current OpenTelemetry span as hex, or (None, None)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None, None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


class ContextFilter(logging.Filter):
    """Copies service, request id and trace ids onto each record as it is emitted."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "service", None) is None:
            record.service = self.service
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "trace_id", None) is None:
            record.trace_id, record.span_id = current_trace_ids()
        return True


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; extras become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            payload[name] = getattr(record, name, None)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and key not in payload and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def make_handler(service: str, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler with Arbor's JSON format and context filter (also used by tests)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter(service))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(
    service: str, level: str | int = "INFO", stream: IO[str] | None = None
) -> None:
    """Send every log record of the process to stderr as JSON; safe to call more than once.

    Only handlers installed by an earlier call are replaced, so pytest's capture handlers and
    anything else a host process added stay in place.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(make_handler(service, stream))
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # grpc.aio logs "Loaded running loop" at DEBUG for every call: keep it out of DEBUG runs.
    for noisy in _NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(max(root.level, logging.INFO))
    logging.captureWarnings(True)
