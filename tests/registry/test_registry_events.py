"""Every registry change leaves through the outbox and reaches a NATS subscriber."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from registry_support import Registry, unique_model

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as pb
from arbor_core.events import ensure_streams, subscribe_events

pytestmark = pytest.mark.integration

PROD = common_pb2.MODEL_STAGE_PRODUCTION
STAGING = common_pb2.MODEL_STAGE_STAGING
ARCHIVED = common_pb2.MODEL_STAGE_ARCHIVED
NONE = common_pb2.MODEL_STAGE_NONE


async def test_each_change_is_an_event_with_the_right_payload(
    pg_registry: Registry, nats_client: Any, nats_namespace: str
) -> None:
    name = unique_model("ev")
    received: list[Any] = []
    got_all = asyncio.Event()
    expected = 9

    async def handler(event: Any) -> None:
        payload = getattr(event, event.WhichOneof("payload"))
        if getattr(payload, "model", None) == name:
            received.append(event)
            if len(received) >= expected:
                got_all.set()

    js = nats_client.jetstream()
    await ensure_streams(js, nats_namespace)
    subscription = await subscribe_events(
        js, handler, pattern="arbor.events.model.>", namespace=nats_namespace
    )
    try:
        v1 = await pg_registry.register(name, experiment=f"experiments/{name}")  # registered
        v2 = await pg_registry.register(name)  # registered
        stub = pg_registry.stub
        await stub.PromoteModel(pb.PromoteModelRequest(name=v1.name, stage=PROD))  # promoted
        # v2 to PRODUCTION: v1 archived + v2 promoted
        await stub.PromoteModel(pb.PromoteModelRequest(name=v2.name, stage=PROD))
        await stub.SetAlias(pb.SetAliasRequest(model=name, alias="champion", version=2))  # moved
        await stub.DeleteAlias(pb.DeleteAliasRequest(model=name, alias="champion"))  # moved
        await stub.ArchiveModel(pb.ArchiveModelRequest(name=v2.name, force=True))  # archived
        await stub.DeleteModel(pb.DeleteModelRequest(name=v1.name))  # deleted
        await asyncio.wait_for(got_all.wait(), 15)
    finally:
        await subscription.stop()

    summary = [(e.type, e.subject) for e in received]
    assert summary == [
        ("model.registered", v1.name),
        ("model.registered", v2.name),
        ("model.promoted", v1.name),
        ("model.archived", v1.name),
        ("model.promoted", v2.name),
        ("model.alias_moved", f"models/{name}"),
        ("model.alias_moved", f"models/{name}"),
        ("model.archived", v2.name),
        ("model.deleted", v1.name),
    ]
    registered = received[0].model_registered
    assert (registered.model, registered.version, registered.experiment) == (
        name,
        1,
        f"experiments/{name}",
    )
    first = received[2].model_promoted
    assert (first.old_stage, first.new_stage, first.previous_production_version) == (NONE, PROD, 0)
    assert received[3].model_archived.old_stage == PROD
    second = received[4].model_promoted
    assert (second.version, second.old_stage, second.new_stage) == (2, NONE, PROD)
    assert second.previous_production_version == 1
    moved, removed = received[5].model_alias_moved, received[6].model_alias_moved
    assert (moved.alias, moved.old_version, moved.new_version) == ("champion", 0, 2)
    assert (removed.old_version, removed.new_version) == (2, 0)
    assert received[7].model_archived.old_stage == PROD
    deleted = received[8].model_deleted
    assert (deleted.version, deleted.old_stage, deleted.purged) == (1, ARCHIVED, False)
    assert all(e.source == "arbor.registry" and e.event_id and e.request_id for e in received)
    assert len({e.event_id for e in received}) == len(received)
