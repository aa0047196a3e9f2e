"""Promotion gates: PRODUCTION and guarded aliases only for a version that beats the incumbent
on the same held-out data by the margin, fast enough; refusals carry the numbers; every
decision is a ``model.promotion_decided`` event."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from registry_support import Registry, unique_model

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as pb
from arbor_core.events import ensure_streams, subscribe_events
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration

PROD = common_pb2.MODEL_STAGE_PRODUCTION
SPLIT = "splits/holdout"
HASH = "a" * 64


async def rpc_error(call: object) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return error_details(info.value)


async def version(
    registry: Registry, name: str, auc: float | None, latency: float = 2.0, split_hash: str = HASH
) -> pb.ModelVersion:
    metrics = {"predict_ms_per_1k_rows": latency}
    if auc is not None:
        metrics["test_roc_auc"] = auc
    return await registry.register(
        name, metrics=metrics, split=SPLIT, split_content_hash=split_hash
    )


async def set_gate(registry: Registry, name: str, **gate: Any) -> pb.Model:
    response = await registry.stub.SetPromotionGate(
        pb.SetPromotionGateRequest(model=f"models/{name}", gate=pb.PromotionGate(**gate))
    )
    return response.model


async def promote(registry: Registry, v: pb.ModelVersion, **extra: Any) -> Any:
    return registry.stub.PromoteModel(pb.PromoteModelRequest(name=v.name, stage=PROD, **extra))


async def test_gate_accepts_a_better_version_and_refuses_with_the_numbers(
    registry: Registry,
) -> None:
    name = unique_model("gate")
    v1 = await version(registry, name, 0.80)
    model = await set_gate(
        registry, name, metric="test_roc_auc", min_improvement=0.01, max_latency=5.0
    )
    gate = model.promotion_gate
    assert gate.direction == pb.METRIC_DIRECTION_MAXIMIZE  # inferred from the metric name
    assert list(gate.guarded_aliases) == ["champion"] and gate.HasField("update_time")

    # No incumbent yet: only the candidate's own numbers are checked.
    await (await promote(registry, v1))

    v2 = await version(registry, name, 0.805)  # better, but not by the margin
    err = await rpc_error(await promote(registry, v2))
    assert err["code"] == "FAILED_PRECONDITION" and err["reason"] == "PROMOTION_GATE_REFUSED"
    meta = err["metadata"]
    assert meta["metric"] == "test_roc_auc" and meta["incumbent_version"] == "1"
    assert float(meta["candidate_value"]) == pytest.approx(0.805)
    assert float(meta["incumbent_value"]) == pytest.approx(0.80)
    assert float(meta["required_value"]) == pytest.approx(0.81)
    violations = err["precondition_violations"]
    assert [v["type"] for v in violations] == ["PROMOTION_GATE"]
    assert violations[0]["subject"] == v2.name and "0.81" in violations[0]["description"]

    v3 = await version(registry, name, 0.85, latency=9.0)  # better, but too slow
    err = await rpc_error(await promote(registry, v3))
    assert float(err["metadata"]["candidate_latency"]) == 9.0
    assert float(err["metadata"]["max_latency"]) == 5.0
    assert "above the limit" in err["precondition_violations"][0]["description"]

    v4 = await version(registry, name, 0.86, split_hash="b" * 64)  # other held-out data
    err = await rpc_error(await promote(registry, v4))
    assert "different held-out data" in err["precondition_violations"][0]["description"]

    v5 = await version(registry, name, None)  # no metric at all
    err = await rpc_error(await promote(registry, v5))
    assert "no value for metric" in err["message"]

    v6 = await version(registry, name, 0.82, latency=3.0)
    response = await (await promote(registry, v6))
    assert response.model_version.stage == PROD
    assert response.previous_production.version == 1
    got = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert got.model.production_version == 6


async def test_minimised_metric_guarded_alias_bypass_and_removal(registry: Registry) -> None:
    name = unique_model("gate")
    v1 = await registry.register(name, metrics={"rmse": 10.0}, split=SPLIT, split_content_hash=HASH)
    v2 = await registry.register(name, metrics={"rmse": 9.9}, split=SPLIT, split_content_hash=HASH)
    v3 = await registry.register(name, metrics={"rmse": 9.0}, split=SPLIT, split_content_hash=HASH)
    await set_gate(registry, name, metric="rmse", min_improvement=0.5)
    stub = registry.stub
    await stub.SetAlias(pb.SetAliasRequest(model=name, alias="champion", version=v1.version))
    err = await rpc_error(
        stub.SetAlias(pb.SetAliasRequest(model=name, alias="champion", version=v2.version))
    )
    assert err["reason"] == "PROMOTION_GATE_REFUSED"
    assert err["metadata"]["target"] == "alias:champion"
    assert float(err["metadata"]["required_value"]) == pytest.approx(9.5)  # lower is better
    # Unguarded aliases move freely.
    await stub.SetAlias(pb.SetAliasRequest(model=name, alias="challenger", version=v2.version))
    moved = await stub.SetAlias(
        pb.SetAliasRequest(model=name, alias="champion", version=v3.version)
    )
    assert moved.previous_version == v1.version
    # A bypass goes through and is recorded.
    back = await stub.SetAlias(
        pb.SetAliasRequest(model=name, alias="champion", version=v2.version, bypass_gate=True)
    )
    assert back.previous_version == v3.version
    # Without a gate, anything goes.
    removed = await stub.SetPromotionGate(pb.SetPromotionGateRequest(model=f"models/{name}"))
    assert not removed.model.HasField("promotion_gate")
    await stub.SetAlias(pb.SetAliasRequest(model=name, alias="champion", version=v1.version))


async def test_bad_gates_name_the_field(registry: Registry) -> None:
    name = unique_model("gate")
    await registry.register(name)
    err = await rpc_error(
        registry.stub.SetPromotionGate(
            pb.SetPromotionGateRequest(
                model=f"models/{name}",
                gate=pb.PromotionGate(
                    metric="business_value", min_improvement=-1, guarded_aliases=["Bad Alias"]
                ),
            )
        )
    )
    assert err["code"] == "INVALID_ARGUMENT"
    fields = {v["field"] for v in err["field_violations"]}
    assert fields == {"gate.direction", "gate.min_improvement", "gate.guarded_aliases[0]"}
    err = await rpc_error(
        registry.stub.SetPromotionGate(
            pb.SetPromotionGateRequest(
                model="models/no-such-model", gate=pb.PromotionGate(metric="rmse")
            )
        )
    )
    assert err["code"] == "NOT_FOUND"


async def test_each_decision_is_an_event(
    pg_registry: Registry, nats_client: Any, nats_namespace: str
) -> None:
    name = unique_model("gate-ev")
    decisions: list[Any] = []
    got = asyncio.Event()

    async def handler(event: Any) -> None:
        kind = event.WhichOneof("payload")
        if kind == "promotion_decided" and event.promotion_decided.model == name:
            decisions.append(event.promotion_decided)
            if len(decisions) >= 3:
                got.set()

    js = nats_client.jetstream()
    await ensure_streams(js, nats_namespace)
    subscription = await subscribe_events(
        js, handler, pattern="arbor.events.model.promotion_decided", namespace=nats_namespace
    )
    try:
        v1 = await version(pg_registry, name, 0.80)
        v2 = await version(pg_registry, name, 0.70)
        await set_gate(pg_registry, name, metric="test_roc_auc")
        await (await promote(pg_registry, v1))
        await rpc_error(await promote(pg_registry, v2))
        await (await promote(pg_registry, v2, bypass_gate=True))
        await asyncio.wait_for(got.wait(), 15)
    finally:
        await subscription.stop()
    accepted, refused, bypassed = decisions
    assert (accepted.accepted, accepted.incumbent_version, accepted.target) == (
        True,
        0,
        "stage:PRODUCTION",
    )
    assert (refused.accepted, refused.bypassed, refused.incumbent_version) == (False, False, 1)
    assert refused.candidate_value == pytest.approx(0.70)
    assert refused.incumbent_value == pytest.approx(0.80) and refused.reasons
    assert (bypassed.accepted, bypassed.bypassed) == (False, True)
