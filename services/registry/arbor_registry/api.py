"""The gRPC servicer: protobuf in, domain call (off the event loop), protobuf out. Nothing else.

Errors are ``ArborError``s raised by the domain; the interceptor in ``arbor_core.server`` turns
them into statuses with ``google.rpc`` details.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as pb
from arbor.registry.v1 import registry_service_pb2_grpc as pb_grpc
from arbor_core.db import run_db
from arbor_core.errors import InvalidArgument
from arbor_registry.domain import (
    MAXIMIZE,
    MINIMIZE,
    InputColumn,
    ModelRecord,
    ModelVersionRecord,
    NewVersion,
    PromotionGate,
    Registry,
    Signature,
    Stage,
    check_alias,
    check_experiment,
    check_model_name,
    model_resource,
    parse_model_name,
    parse_version_name,
)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


# --------------------------------------------------------------------------- enums


def _enum_suffix(enum: Any, value: int, prefix: str, field: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        raise InvalidArgument(f"unknown enum value {value}", field=field) from None


def stage_from_pb(value: int, field: str) -> Stage | None:
    """MODEL_STAGE_UNSPECIFIED -> None."""
    name = _enum_suffix(common_pb2.ModelStage, value, "MODEL_STAGE_", field)
    return None if name == "UNSPECIFIED" else Stage(name)


def stage_to_pb(stage: Stage) -> common_pb2.ModelStage.ValueType:
    return common_pb2.ModelStage.Value("MODEL_STAGE_" + stage.value)


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


# --------------------------------------------------------------------------- messages


def new_version_from_pb(model: str, v: pb.ModelVersion) -> NewVersion:
    """The registration payload; output-only fields of ``v`` are ignored."""
    params: Mapping[str, Any] = json_format.MessageToDict(v.params) if v.HasField("params") else {}
    return NewVersion(
        model=model,
        experiment=v.experiment,
        best_trial_number=v.best_trial_number,
        split=v.split,
        split_content_hash=v.split_content_hash,
        model_type=_enum_suffix(
            common_pb2.ModelType, v.model_type, "MODEL_TYPE_", "model_version.model_type"
        ),
        task_type=_enum_suffix(
            common_pb2.TaskType, v.task_type, "TASK_TYPE_", "model_version.task_type"
        ),
        metrics=dict(v.metrics),
        params=params,
        signature=Signature(
            inputs=tuple(
                InputColumn(c.name, c.dtype, c.nullable, c.categorical) for c in v.signature.inputs
            ),
            class_labels=tuple(v.signature.class_labels),
            label_dtype=v.signature.label_dtype,
        ),
        artifact_uri=v.artifact_uri,
        artifact_checksums=dict(v.artifact_checksums),
        library_versions=dict(v.library_versions),
        labels=dict(v.labels),
        description=v.description,
        training_rows=v.training_rows,
    )


def version_to_pb(v: ModelVersionRecord) -> pb.ModelVersion:
    d = v.data
    params = struct_pb2.Struct()
    params.update(dict(d.params))
    return pb.ModelVersion(
        name=v.name,
        model=v.model,
        version=v.version,
        experiment=d.experiment,
        best_trial_number=d.best_trial_number,
        split=d.split,
        split_content_hash=d.split_content_hash,
        model_type=common_pb2.ModelType.Value("MODEL_TYPE_" + d.model_type),
        task_type=common_pb2.TaskType.Value("TASK_TYPE_" + d.task_type),
        metrics=dict(d.metrics),
        params=params,
        signature=pb.ModelSignature(
            inputs=[
                pb.InputColumn(
                    name=c.name, dtype=c.dtype, nullable=c.nullable, categorical=c.categorical
                )
                for c in d.signature.inputs
            ],
            class_labels=list(d.signature.class_labels),
            label_dtype=d.signature.label_dtype,
        ),
        artifact_uri=d.artifact_uri,
        artifact_checksums=dict(d.artifact_checksums),
        library_versions=dict(d.library_versions),
        stage=stage_to_pb(v.stage),
        aliases=list(v.aliases),
        labels=dict(d.labels),
        description=d.description,
        create_time=_timestamp(v.create_time),
        update_time=_timestamp(v.update_time),
        delete_time=_timestamp(v.delete_time),
        etag=v.etag,
        training_rows=d.training_rows,
    )


_DIRECTIONS = {
    pb.METRIC_DIRECTION_UNSPECIFIED: "",
    pb.METRIC_DIRECTION_MAXIMIZE: MAXIMIZE,
    pb.METRIC_DIRECTION_MINIMIZE: MINIMIZE,
}


def gate_from_pb(gate: pb.PromotionGate) -> PromotionGate:
    if gate.direction not in _DIRECTIONS:
        raise InvalidArgument(f"unknown enum value {gate.direction}", field="gate.direction")
    return PromotionGate(
        metric=gate.metric,
        direction=_DIRECTIONS[gate.direction],
        min_improvement=gate.min_improvement,
        max_latency=gate.max_latency,
        latency_metric=gate.latency_metric,
        allow_different_split=gate.allow_different_split,
        guarded_aliases=tuple(gate.guarded_aliases),
    )


def gate_to_pb(gate: PromotionGate) -> pb.PromotionGate:
    direction = {v: k for k, v in _DIRECTIONS.items()}.get(gate.direction, 0)
    return pb.PromotionGate(
        metric=gate.metric,
        direction=direction,  # type: ignore[arg-type]
        min_improvement=gate.min_improvement,
        max_latency=gate.max_latency,
        latency_metric=gate.latency_metric,
        allow_different_split=gate.allow_different_split,
        guarded_aliases=list(gate.guarded_aliases),
        update_time=_timestamp(gate.update_time),
    )


def model_to_pb(model: ModelRecord) -> pb.Model:
    return pb.Model(
        name=model_resource(model.name),
        model=model.name,
        description=model.description,
        labels=dict(model.labels),
        latest_version=model.latest_version,
        production_version=model.production_version,
        aliases=dict(model.aliases),
        create_time=_timestamp(model.create_time),
        update_time=_timestamp(model.update_time),
        delete_time=_timestamp(model.delete_time),
        promotion_gate=gate_to_pb(model.promotion_gate) if model.promotion_gate else None,
    )


# --------------------------------------------------------------------------- servicer


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    """Thin adapter over ``domain.Registry``; each call runs in a worker thread (run_db)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def RegisterModelVersion(
        self, request: pb.RegisterModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterModelVersionResponse:
        model = request.model.removeprefix("models/")
        new = new_version_from_pb(model, request.model_version)
        version, created = await run_db(self.registry.register, new, request.request_id)
        return pb.RegisterModelVersionResponse(
            model_version=version_to_pb(version), created=created
        )

    async def GetModel(
        self, request: pb.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelResponse:
        model = parse_model_name(request.name, "name")
        record, versions = await run_db(self.registry.get_model, model, request.show_deleted)
        return pb.GetModelResponse(
            model=model_to_pb(record), versions=[version_to_pb(v) for v in versions]
        )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        page = await run_db(
            self.registry.list_models,
            request.page_size,
            request.page_token,
            dict(request.label_filter),
            request.show_deleted,
        )
        return pb.ListModelsResponse(
            models=[model_to_pb(m) for m in page.items], next_page_token=page.next_page_token
        )

    async def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelVersionResponse:
        model, number = parse_version_name(request.name, "name")
        version = await run_db(self.registry.get_version, model, number, request.show_deleted)
        return pb.GetModelVersionResponse(model_version=version_to_pb(version))

    async def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListModelVersionsResponse:
        model = parse_model_name(request.parent, "parent")
        stage = stage_from_pb(request.stage_filter, "stage_filter")
        page = await run_db(
            self.registry.list_versions,
            model,
            request.page_size,
            request.page_token,
            stage,
            request.show_deleted,
        )
        return pb.ListModelVersionsResponse(
            model_versions=[version_to_pb(v) for v in page.items],
            next_page_token=page.next_page_token,
        )

    async def PromoteModel(
        self, request: pb.PromoteModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.PromoteModelResponse:
        model, number = parse_version_name(request.name, "name")
        stage = stage_from_pb(request.stage, "stage")
        if stage is None:
            raise InvalidArgument(
                "stage is required: MODEL_STAGE_STAGING or MODEL_STAGE_PRODUCTION", field="stage"
            )
        previous_stage = stage_from_pb(
            request.previous_production_stage, "previous_production_stage"
        )
        promoted, previous = await run_db(
            lambda: self.registry.promote(
                model,
                number,
                stage,
                previous_production_stage=previous_stage or Stage.ARCHIVED,
                etag=request.etag,
                allow_archived=request.allow_archived,
                bypass_gate=request.bypass_gate,
            )
        )
        response = pb.PromoteModelResponse(model_version=version_to_pb(promoted))
        if previous is not None:
            response.previous_production.CopyFrom(version_to_pb(previous))
        return response

    async def SetAlias(
        self, request: pb.SetAliasRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetAliasResponse:
        model = parse_model_name(request.model, "model")
        version, previous = await run_db(
            lambda: self.registry.set_alias(
                model, request.alias, request.version, bypass_gate=request.bypass_gate
            )
        )
        return pb.SetAliasResponse(model_version=version_to_pb(version), previous_version=previous)

    async def DeleteAlias(
        self, request: pb.DeleteAliasRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteAliasResponse:
        model = parse_model_name(request.model, "model")
        previous = await run_db(self.registry.delete_alias, model, request.alias)
        return pb.DeleteAliasResponse(previous_version=previous)

    async def ArchiveModel(
        self, request: pb.ArchiveModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ArchiveModelResponse:
        model, number = parse_version_name(request.name, "name")
        archived = await run_db(
            lambda: self.registry.archive(model, number, etag=request.etag, force=request.force)
        )
        return pb.ArchiveModelResponse(model_version=version_to_pb(archived))

    async def DeleteModel(
        self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteModelResponse:
        number: int | None
        if "/versions/" in request.name:
            model, number = parse_version_name(request.name, "name")
        else:
            model, number = parse_model_name(request.name, "name", bare_ok=False), None
            if request.etag:
                raise InvalidArgument("etag applies to a version only", field="etag")
        deleted = await run_db(
            lambda: self.registry.delete(
                model, number, purge=request.purge, force=request.force, etag=request.etag
            )
        )
        return pb.DeleteModelResponse(deleted_versions=[version_to_pb(v) for v in deleted])

    async def ResolveModel(
        self, request: pb.ResolveModelRequest, context: grpc.aio.ServicerContext
    ) -> pb.ResolveModelResponse:
        selector = request.selector
        kind = selector.WhichOneof("selector") if request.HasField("selector") else None
        if kind == "model_version":
            ref = parse_version_name(selector.model_version, "selector.model_version")
            found = await run_db(lambda: self.registry.resolve(model_version=ref))
        elif kind == "experiment":
            check_experiment(selector.experiment, "selector.experiment")
            found = await run_db(lambda: self.registry.resolve(experiment=selector.experiment))
        elif kind == "stage":
            check_model_name(selector.stage.model, "selector.stage.model")
            stage = stage_from_pb(selector.stage.stage, "selector.stage.stage") or Stage.PRODUCTION
            found = await run_db(lambda: self.registry.resolve(stage=(selector.stage.model, stage)))
        elif kind == "alias":
            check_model_name(selector.alias.model, "selector.alias.model")
            check_alias(selector.alias.alias, "selector.alias.alias")
            found = await run_db(
                lambda: self.registry.resolve(alias=(selector.alias.model, selector.alias.alias))
            )
        else:
            raise InvalidArgument(
                "selector is required: model_version, experiment, stage or alias",
                field="selector",
                reason="SELECTOR_REQUIRED",
            )
        return pb.ResolveModelResponse(model_version=version_to_pb(found))

    async def SetPromotionGate(
        self, request: pb.SetPromotionGateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetPromotionGateResponse:
        model = parse_model_name(request.model, "model")
        gate = gate_from_pb(request.gate) if request.HasField("gate") else None
        record = await run_db(self.registry.set_promotion_gate, model, gate)
        return pb.SetPromotionGateResponse(model=model_to_pb(record))


def register(registry: Registry) -> Any:
    """The ``register`` callable ServiceRunner wants: adds the servicer, returns its name."""

    def add(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(registry), server)
        return [SERVICE_NAME]

    return add
