"""The bad-input suite: malformed requests to every service, table-driven from
``tests/testdata/bad_inputs/<service>.json``. Each case asserts the exact status code (and,
where given, the ErrorInfo reason and the offending field), then a valid request to the same
service must still succeed: bad input is refused, never fatal.

Fixture values in requests: ``{name}`` placeholders filled from the running stack,
``"$repeat:<char>:<n>"`` (a long string), ``"$bytes:<n>"`` (n bytes, base64), ``{"$map": n}``
(n map entries), ``{"$list": n}`` (n strings); ``raw_hex`` sends bytes that are not a valid
message at all. Servers run with a 1 MiB message limit so "oversized" stays cheap.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from reliability_support import (
    RunningService,
    create_split_request,
    model_version_fields,
    service_settings,
    start_registry,
    start_split,
    write_table,
)

from arbor.registry.v1 import registry_service_pb2 as rpb
from arbor.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from arbor.split.v1 import split_service_pb2_grpc as spb_grpc
from arbor.training.v1 import training_service_pb2 as tpb
from arbor.training.v1 import training_service_pb2_grpc as tpb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "testdata" / "bad_inputs"
MAX_MESSAGE_BYTES = 1024 * 1024


def _load(service: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{service}.json").read_text())


def _cases() -> list[Any]:
    params = []
    for path in sorted(FIXTURES.glob("*.json")):
        spec = json.loads(path.read_text())
        for case in spec["cases"]:
            params.append(
                pytest.param(spec["service"], case, id=f"{spec['service']}-{case['name']}")
            )
    return params


@dataclass
class Stack:
    services: dict[str, RunningService]
    values: dict[str, str]


@pytest.fixture(scope="module")
async def stack(
    nats_url: str, nats_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    from arbor_training.server import build_runner as training_runner
    from arbor_training.server import migrate as training_migrate

    home = tmp_path_factory.mktemp("bad-inputs")
    data_root = home / "data"
    data_file = write_table(data_root / "t.parquet", rows=200)
    outside = write_table(home / "outside" / "secret.parquet", rows=20)
    escape = data_root / "escape.parquet"
    escape.symlink_to(outside)
    limits = {"max_message_bytes": MAX_MESSAGE_BYTES}
    services: dict[str, RunningService] = {}
    try:
        artifacts = LocalArtifactStore(home / "artifacts")
        services["registry"] = await start_registry(
            f"sqlite:///{home / 'registry.db'}", nats_url, nats_namespace, artifacts.root, **limits
        )
        services["split"] = await start_split(
            f"sqlite:///{home / 'split.db'}", nats_url, nats_namespace, artifacts, data_root,
            **limits,
        )  # fmt: skip
        training_settings = service_settings(
            "training",
            database_url=f"sqlite:///{home / 'training.db'}",
            nats_url=nats_url,
            nats_namespace=nats_namespace,
            home=home,
            service_addresses={"split": services["split"].address},
            **limits,
        )
        training_migrate(training_settings)
        training = training_runner(training_settings, relay_poll_interval=0.1)
        await training.start()
        services["training"] = RunningService(
            training, grpc.aio.insecure_channel(training.address), training_settings
        )

        model = "bad-inputs-model"
        fields = model_version_fields(artifacts, model, "v1")
        await rpb_grpc.RegistryServiceStub(services["registry"].channel).RegisterModelVersion(
            rpb.RegisterModelVersionRequest(model=model, model_version=rpb.ModelVersion(**fields))
        )
        split = await spb_grpc.SplitServiceStub(services["split"].channel).CreateSplit(
            create_split_request(str(data_file), "bad-inputs-split"), timeout=60
        )
        experiment = await tpb_grpc.TrainingServiceStub(
            services["training"].channel
        ).CreateExperiment(
            tpb.CreateExperimentRequest(
                experiment=tpb.Experiment(
                    split=split.split.name, study=tpb.StudyConfig(n_trials=1, max_iterations=5)
                )
            ),
            timeout=30,
        )
        values = {
            "model": model,
            "version_name": f"models/{model}/versions/1",
            "artifact_uri": fields["artifact_uri"],
            "data_root": str(data_root),
            "data_file": str(data_file),
            "outside_file": str(outside),
            "escape_link": str(escape),
            "split": split.split.name,
            "experiment": experiment.experiment.name,
        }
        yield Stack(services, values)
    finally:
        for svc in services.values():
            await svc.close()


def _expand(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$map"}:
            return {f"key{i}": "value" for i in range(value["$map"])}
        if set(value) == {"$list"}:
            return [f"item{i}" for i in range(value["$list"])]
        return {k: _expand(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, values) for v in value]
    if isinstance(value, str):
        if value.startswith("$repeat:"):
            _, char, count = value.split(":")
            return char * int(count)
        if value.startswith("$bytes:"):
            return base64.b64encode(b"\x00" * int(value.split(":")[1])).decode()
        return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], value)
    return value


async def _call(stack: Stack, service: str, method: str, case: dict[str, Any]) -> Any:
    spec = _load(service)
    module_name, _, stub_name = spec["stub"].rpartition(".")
    stub = getattr(importlib.import_module(module_name), stub_name)(stack.services[service].channel)
    messages = importlib.import_module(spec["messages"])
    if "raw_hex" in case:
        full = messages.DESCRIPTOR.services_by_name[stub_name.removesuffix("Stub")].full_name
        call = stack.services[service].channel.unary_unary(f"/{full}/{method}")
        return await call(bytes.fromhex(case["raw_hex"]), timeout=30)
    request = json_format.ParseDict(
        _expand(case.get("request", {}), stack.values), getattr(messages, f"{method}Request")()
    )
    return await getattr(stub, method)(request, timeout=60)


def test_the_suite_is_big_enough() -> None:
    cases = _cases()
    assert len(cases) >= 40
    assert {c.values[0] for c in cases} >= {"registry", "split", "training"}


@pytest.mark.parametrize(("service", "case"), _cases())
async def test_bad_input_is_refused_and_the_service_keeps_serving(
    stack: Stack, service: str, case: dict[str, Any]
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _call(stack, service, case["method"], case)
    err = caught.value
    details = error_details(err)
    assert err.code().name == case["code"], (err.code(), err.details(), details)
    if "reason" in case:
        assert details["reason"] == case["reason"], details
    if "field" in case:
        fields = [v["field"] for v in details["field_violations"]]
        assert case["field"] in fields, details
    if err.code() not in (grpc.StatusCode.RESOURCE_EXHAUSTED,):
        assert details["domain"] == "arbor.dev", details  # every refusal is an Arbor error
        assert "Traceback" not in err.details() and "<class" not in err.details()
    probe = _load(service)["probe"]
    assert await _call(stack, service, probe["method"], probe) is not None
