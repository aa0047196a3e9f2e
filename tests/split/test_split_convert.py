"""Protobuf <-> domain conversions of the servicer (no server needed)."""

from __future__ import annotations

import datetime as dt

import pytest

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2 as pb
from arbor_core.errors import InvalidArgument
from arbor_split.api import create_command_from_pb, split_to_pb, strategy_from_pb
from arbor_split.domain import DataFormat, EntityStrategy, TimeStrategy, UriSource
from arbor_split.service import SplitRecord, source_to_dict, strategy_to_dict


def _request(**split: object) -> pb.CreateSplitRequest:
    base: dict[str, object] = {"source": pb.DataSource(uri="/data/x.csv"), "target_column": "y"}
    base.update(split)
    return pb.CreateSplitRequest(split=pb.Split(**base))  # type: ignore[arg-type]


def test_time_cutoffs_roundtrip_through_the_record() -> None:
    strategy = pb.SplitStrategy(
        time=pb.TimeStrategy(
            time_column="t",
            cutoffs=pb.TimeCutoffs(
                validation_start={"seconds": 1_700_000_000},
                test_start={"seconds": 1_700_086_400},
            ),
        )
    )
    command = create_command_from_pb(_request(strategy=strategy))
    parsed = command.spec.strategy
    assert isinstance(parsed, TimeStrategy) and parsed.mode == "cutoffs"
    assert parsed.validation_start == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)
    record = SplitRecord("abc", "READY", strategy=strategy_to_dict(command.spec))
    assert split_to_pb(record).strategy == strategy


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (pb.SplitStrategy(), "random"),
        (pb.SplitStrategy(time=pb.TimeStrategy(time_column="t", by_time_range=True)), "time_range"),
        (pb.SplitStrategy(time=pb.TimeStrategy(time_column="t")), "row_fraction"),
    ],
)
def test_strategy_defaults(message: pb.SplitStrategy, expected: str) -> None:
    parsed = strategy_from_pb(message)
    assert getattr(parsed, "mode", "random") == expected


def test_entity_strategy_and_uri_format() -> None:
    request = _request(
        strategy=pb.SplitStrategy(entity=pb.EntityStrategy(entity_column="c", stratify=True)),
    )
    request.split.source.format = common_pb2.DATA_FORMAT_CSV
    command = create_command_from_pb(request)
    assert command.spec.strategy == EntityStrategy("c", True)
    assert command.spec.source == UriSource("/data/x.csv", DataFormat.CSV)
    assert source_to_dict(command.spec) == {"uri": "/data/x.csv", "format": "csv"}


def test_request_hash_ignores_the_request_id_only() -> None:
    a = _request()
    a.request_id = "one"
    b = _request()
    b.request_id = "two"
    c = _request(seed=5)
    hashes = [create_command_from_pb(r).request_hash for r in (a, b, c)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_missing_split_or_source() -> None:
    with pytest.raises(InvalidArgument) as info:
        create_command_from_pb(pb.CreateSplitRequest())
    assert info.value.violations[0].field == "split"
    with pytest.raises(InvalidArgument) as info:
        create_command_from_pb(pb.CreateSplitRequest(split=pb.Split(target_column="y")))
    assert info.value.violations[0].field == "split.source"
    empty_inline = pb.DataSource(inline=common_pb2.InlineData())
    with pytest.raises(InvalidArgument) as info:
        create_command_from_pb(_request(source=empty_inline))
    assert info.value.violations[0].field == "split.source.inline"
