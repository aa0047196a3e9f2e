"""Fault 5: an artifact corrupted in the store (bytes changed after it was written). Loading it
is refused with DATA_LOSS and a clear error, the model is never deserialized (checksums are
checked before any byte reaches a model library), and the service keeps serving other models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from reliability_support import (
    predict_request,
    registration_for,
    start_inference,
    start_registry,
    tiny_bundle,
)

from arbor.inference.v1 import inference_service_pb2_grpc as ipb_grpc
from arbor.registry.v1 import registry_service_pb2_grpc as rpb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.status_details import error_details
from arbor_ml import bundle as bundle_module

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.slow]


async def test_corrupted_model_is_refused_and_others_keep_serving(
    nats_url: str, nats_namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")
    registry = await start_registry(
        f"sqlite:///{tmp_path / 'registry.db'}", nats_url, nats_namespace, store.root
    )
    inference = await start_inference(nats_url, nats_namespace, store.root, registry.address)
    rstub = rpb_grpc.RegistryServiceStub(registry.channel)
    istub = ipb_grpc.InferenceServiceStub(inference.channel)
    rebuilt: list[Any] = []
    original = bundle_module.ModelBundle.from_files.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, files: Any) -> Any:
        rebuilt.append(sorted(files))
        return original(cls, files)

    monkeypatch.setattr(bundle_module.ModelBundle, "from_files", classmethod(spy))
    try:
        bundle = tiny_bundle()
        good = (
            await rstub.RegisterModelVersion(registration_for(bundle, store, "good", 1))
        ).model_version
        bad = (
            await rstub.RegisterModelVersion(registration_for(bundle, store, "bad", 1))
        ).model_version
        assert (await istub.Predict(predict_request(good.name), timeout=30)).row_count == 3

        model_key = "models/bad/v1/model.cbm"
        path = store.root / model_key
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the model
        path.write_bytes(bytes(data))
        loads_before = len(rebuilt)

        for _ in range(2):  # refused every time, not only on the first load
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await istub.Predict(predict_request(bad.name), timeout=30)
            err = caught.value
            assert err.code() == grpc.StatusCode.DATA_LOSS, err.details()
            details = error_details(err)
            assert details["reason"] == "ARTIFACT_CHECKSUM_MISMATCH", details
            assert "model.cbm" in err.details() and "corrupt" in err.details()
        assert len(rebuilt) == loads_before, "a corrupt bundle reached the model library"

        # The other model still answers, and health stays SERVING.
        assert (await istub.Predict(predict_request(good.name), timeout=30)).row_count == 3
        assert await inference.runner.check_readiness()
    finally:
        await inference.close()
        await registry.close()
