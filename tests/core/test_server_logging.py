"""configure_logging: one JSON object per line with the context fields and extras."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from arbor_core.logging import configure_logging, request_id_scope


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    yield buffer
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_line_with_context_and_extras(stream: io.StringIO) -> None:
    configure_logging("split", "INFO", stream=stream)
    tracer = TracerProvider().get_tracer("test")
    log = logging.getLogger("arbor_split.domain")
    log.debug("hidden at INFO")
    with request_id_scope("rid-1"), tracer.start_as_current_span("work") as span:
        log.info("split %s created", "splits/1", extra={"rows": 10, "parts": ["train", "test"]})
    [line] = _lines(stream)
    assert line["message"] == "split splits/1 created"
    assert line["level"] == "INFO"
    assert line["logger"] == "arbor_split.domain"
    assert line["service"] == "split"
    assert line["request_id"] == "rid-1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")
    assert line["rows"] == 10 and line["parts"] == ["train", "test"]
    assert str(line["time"]).endswith("+00:00")


def test_exception_and_unserialisable_extras(stream: io.StringIO) -> None:
    configure_logging("training", "DEBUG", stream=stream)
    try:
        raise ValueError("bad trial")
    except ValueError:
        logging.getLogger("t").exception("trial failed", extra={"obj": object()})
    [line] = _lines(stream)
    assert "ValueError: bad trial" in str(line["exception"])
    assert str(line["obj"]).startswith("<object object")
    assert line["request_id"] is None


def test_reconfiguring_replaces_only_its_own_handler(stream: io.StringIO) -> None:
    configure_logging("registry", "INFO", stream=stream)
    configure_logging("registry", "INFO", stream=stream)
    logging.getLogger("r").info("once")
    assert len(_lines(stream)) == 1
