"""SplitClient: create, read, list, update and delete dataset splits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from google.protobuf import field_mask_pb2

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2 as pb
from arbor.split.v1 import split_service_pb2_grpc as pb_grpc
from arbor_client._base import ServiceClient, resource_name
from arbor_client._enums import parse_enum
from arbor_client._transport import new_request_id
from arbor_client.errors import ArborClientError
from arbor_client.rows import frame_to_inline, read_table, rows_to_inline

__all__ = ["INLINE_UPLOAD_LIMIT", "SplitClient"]

# Files up to this size are sent inline (as Arrow IPC) by create_split_from_file(upload="auto"),
# so the split service need not see the caller's disk; larger ones are passed by path/URI.
INLINE_UPLOAD_LIMIT = 32 * 1024 * 1024
CREATE_TIMEOUT_S = 600.0
Strategy = Literal["random", "stratified", "time", "entity"]


def build_strategy(
    strategy: str = "random",
    *,
    stratify: bool = False,
    time_column: str | None = None,
    time_boundaries: Literal["row_fraction", "time_range"] = "row_fraction",
    validation_start: dt.datetime | None = None,
    test_start: dt.datetime | None = None,
    entity_column: str | None = None,
) -> pb.SplitStrategy:
    """A SplitStrategy from flat options (what a CLI flag or a notebook has at hand)."""
    kind = strategy.lower()
    if kind in {"random", "stratified"}:
        return pb.SplitStrategy(random=pb.RandomStrategy(stratify=stratify or kind == "stratified"))
    if kind == "time":
        if not time_column:
            raise ArborClientError.invalid_argument(
                "the time strategy needs a time column", field="strategy.time.time_column"
            )
        time = pb.TimeStrategy(time_column=time_column)
        if validation_start is not None:
            time.cutoffs.validation_start.FromDatetime(validation_start)
            if test_start is not None:
                time.cutoffs.test_start.FromDatetime(test_start)
        elif time_boundaries == "time_range":
            time.by_time_range = True
        else:
            time.by_row_fraction = True
        return pb.SplitStrategy(time=time)
    if kind == "entity":
        if not entity_column:
            raise ArborClientError.invalid_argument(
                "the entity strategy needs an entity column", field="strategy.entity.entity_column"
            )
        return pb.SplitStrategy(
            entity=pb.EntityStrategy(entity_column=entity_column, stratify=stratify)
        )
    raise ArborClientError.invalid_argument(
        f"unknown strategy {strategy!r}; choose random, stratified, time or entity",
        field="strategy",
    )


def build_fractions(
    fractions: Sequence[float] | pb.Fractions | None,
) -> pb.Fractions | None:
    """``(0.7, 0.15, 0.15)`` or ``(0.8, 0.2)`` -> Fractions; None leaves the server default."""
    if fractions is None or isinstance(fractions, pb.Fractions):
        return fractions
    values = list(fractions)
    if len(values) not in (2, 3):
        raise ArborClientError.invalid_argument(
            "fractions are (train, validation) or (train, validation, test)", field="fractions"
        )
    return pb.Fractions(
        train=values[0], validation=values[1], test=values[2] if len(values) == 3 else 0.0
    )


class SplitClient(ServiceClient):
    """``arbor.split.v1.SplitService``; every method returns the Split message itself."""

    service = "split"
    grpc_service = "arbor.split.v1.SplitService"
    stub_class = pb_grpc.SplitServiceStub

    # create -----------------------------------------------------------------------------
    def create_split(
        self,
        split: pb.Split,
        *,
        split_id: str = "",
        request_id: str | None = None,
        fail_on_leakage: bool = False,
        timeout: float | None = CREATE_TIMEOUT_S,
    ) -> pb.Split:
        """CreateSplit with an idempotency key (generated when not given), so it is retried
        safely on UNAVAILABLE: a replay returns the split the first attempt made."""
        request = pb.CreateSplitRequest(
            split=split,
            split_id=split_id,
            request_id=request_id or new_request_id(),
            fail_on_leakage=fail_on_leakage,
        )
        return self._call("CreateSplit", request, timeout).split  # type: ignore[no-any-return]

    def _new_split(
        self,
        source: pb.DataSource,
        target: str,
        *,
        strategy: str | pb.SplitStrategy,
        stratify: bool,
        time_column: str | None,
        entity_column: str | None,
        fractions: Sequence[float] | pb.Fractions | None,
        seed: int,
        display_name: str,
        description: str,
        labels: Mapping[str, str] | None,
        **strategy_options: Any,
    ) -> pb.Split:
        if not target:
            raise ArborClientError.invalid_argument(
                "a target column is required", field="target_column"
            )
        split = pb.Split(
            source=source,
            target_column=target,
            seed=seed,
            display_name=display_name,
            description=description,
            labels=dict(labels or {}),
        )
        if isinstance(strategy, pb.SplitStrategy):
            split.strategy.CopyFrom(strategy)
        else:
            split.strategy.CopyFrom(
                build_strategy(
                    strategy,
                    stratify=stratify,
                    time_column=time_column,
                    entity_column=entity_column,
                    **strategy_options,
                )
            )
        built = build_fractions(fractions)
        if built is not None:
            split.fractions.CopyFrom(built)
        return split

    def create_split_from_file(
        self,
        path: str | Path,
        target: str,
        *,
        strategy: str | pb.SplitStrategy = "random",
        stratify: bool = False,
        time_column: str | None = None,
        entity_column: str | None = None,
        fractions: Sequence[float] | pb.Fractions | None = None,
        seed: int = 0,
        split_id: str = "",
        display_name: str = "",
        description: str = "",
        labels: Mapping[str, str] | None = None,
        upload: Literal["auto", "inline", "uri"] = "auto",
        data_format: str | None = None,
        fail_on_leakage: bool = False,
        request_id: str | None = None,
        timeout: float | None = CREATE_TIMEOUT_S,
        **strategy_options: Any,
    ) -> pb.Split:
        """Split a CSV / Parquet / NDJSON file (or a ``gs://`` URI).

        ``upload="inline"`` reads the file here and sends it as Arrow IPC (the service need
        not see this disk); ``"uri"`` sends the absolute path, which must lie under the
        service's allowed roots; ``"auto"`` inlines files up to 32 MiB.
        """
        text = str(path)
        fmt = parse_enum(common_pb2.DataFormat, data_format, field="format") if data_format else 0
        if text.startswith("gs://") or text.startswith("file://"):
            source = pb.DataSource(uri=text, format=fmt)  # type: ignore[arg-type]
        else:
            file = Path(text).expanduser()
            if not file.is_file():
                raise ArborClientError.invalid_argument(f"no such file: {file}", field="path")
            inline = upload == "inline" or (
                upload == "auto" and file.stat().st_size <= INLINE_UPLOAD_LIMIT
            )
            if inline:
                fmt_name = common_pb2.DataFormat.Name(fmt)[len("DATA_FORMAT_") :].lower()
                frame = read_table(file, None if fmt == 0 else fmt_name)
                source = pb.DataSource(inline=frame_to_inline(frame))
            else:
                source = pb.DataSource(uri=str(file.resolve()), format=fmt)  # type: ignore[arg-type]
        split = self._new_split(
            source,
            target,
            strategy=strategy,
            stratify=stratify,
            time_column=time_column,
            entity_column=entity_column,
            fractions=fractions,
            seed=seed,
            display_name=display_name or Path(text).stem,
            description=description,
            labels=labels,
            **strategy_options,
        )
        return self.create_split(
            split,
            split_id=split_id,
            request_id=request_id,
            fail_on_leakage=fail_on_leakage,
            timeout=timeout,
        )

    def create_split_from_rows(
        self,
        rows: Iterable[Mapping[str, Any]],
        target: str,
        *,
        strategy: str | pb.SplitStrategy = "random",
        stratify: bool = False,
        time_column: str | None = None,
        entity_column: str | None = None,
        fractions: Sequence[float] | pb.Fractions | None = None,
        seed: int = 0,
        split_id: str = "",
        display_name: str = "",
        description: str = "",
        labels: Mapping[str, str] | None = None,
        fail_on_leakage: bool = False,
        request_id: str | None = None,
        timeout: float | None = CREATE_TIMEOUT_S,
    ) -> pb.Split:
        """Split rows given as dicts (sent as JSON rows; fine for small tables)."""
        split = self._new_split(
            pb.DataSource(inline=rows_to_inline(rows)),
            target,
            strategy=strategy,
            stratify=stratify,
            time_column=time_column,
            entity_column=entity_column,
            fractions=fractions,
            seed=seed,
            display_name=display_name,
            description=description,
            labels=labels,
        )
        return self.create_split(
            split,
            split_id=split_id,
            request_id=request_id,
            fail_on_leakage=fail_on_leakage,
            timeout=timeout,
        )

    # read -------------------------------------------------------------------------------
    def get_split(
        self, name: str, *, show_deleted: bool = False, timeout: float | None = None
    ) -> pb.Split:
        request = pb.GetSplitRequest(name=resource_name("splits", name), show_deleted=show_deleted)
        return self._call("GetSplit", request, timeout).split  # type: ignore[no-any-return]

    def list_splits(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        labels: Mapping[str, str] | None = None,
        state: str | int | None = None,
        show_deleted: bool = False,
        timeout: float | None = None,
    ) -> pb.ListSplitsResponse:
        """One page; ``iter_splits`` walks them all."""
        request = pb.ListSplitsRequest(
            page_size=page_size,
            page_token=page_token,
            label_filter=dict(labels or {}),
            state_filter=parse_enum(pb.SplitState, state, field="state_filter"),  # type: ignore[arg-type]
            show_deleted=show_deleted,
        )
        return self._call("ListSplits", request, timeout)  # type: ignore[no-any-return]

    def iter_splits(
        self,
        *,
        page_size: int = 0,
        labels: Mapping[str, str] | None = None,
        state: str | int | None = None,
        show_deleted: bool = False,
        limit: int | None = None,
    ) -> Iterator[pb.Split]:
        """Every split matching the filters, newest first, fetching pages as needed."""
        token, seen = "", 0
        while True:
            page = self.list_splits(
                page_size=page_size,
                page_token=token,
                labels=labels,
                state=state,
                show_deleted=show_deleted,
            )
            for split in page.splits:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield split
            token = page.next_page_token
            if not token:
                return

    # update / delete --------------------------------------------------------------------
    def update_split(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        labels: Mapping[str, str] | None = None,
        etag: str = "",
        timeout: float | None = None,
    ) -> pb.Split:
        """Change only what is given (the update mask names exactly those fields)."""
        split = pb.Split(name=resource_name("splits", name), etag=etag)
        paths: list[str] = []
        if display_name is not None:
            split.display_name = display_name
            paths.append("display_name")
        if description is not None:
            split.description = description
            paths.append("description")
        if labels is not None:
            split.labels.update(dict(labels))
            paths.append("labels")
        if not paths:
            raise ArborClientError.invalid_argument(
                "nothing to update: give a display name, description or labels",
                field="update_mask",
            )
        request = pb.UpdateSplitRequest(
            split=split, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return self._call("UpdateSplit", request, timeout).split  # type: ignore[no-any-return]

    def delete_split(
        self, name: str, *, purge: bool = False, etag: str = "", timeout: float | None = None
    ) -> pb.Split:
        """Soft delete; ``purge`` also removes the Parquet parts from the artifact store."""
        request = pb.DeleteSplitRequest(name=resource_name("splits", name), purge=purge, etag=etag)
        return self._call("DeleteSplit", request, timeout).split  # type: ignore[no-any-return]
