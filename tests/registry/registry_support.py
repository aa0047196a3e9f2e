"""Helpers shared by the registry tests (imported as a top-level module, like core_support)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from arbor.registry.v1 import registry_service_pb2 as pb
from arbor.registry.v1 import registry_service_pb2_grpc as pb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.config import Settings
from arbor_core.server import ServiceRunner


@dataclasses.dataclass
class Registry:
    """One running registry: its stub, settings and the real local artifact store it purges."""

    backend: str
    stub: pb_grpc.RegistryServiceStub
    settings: Settings
    artifacts: LocalArtifactStore
    runner: ServiceRunner

    async def register(self, model: str, **fields: Any) -> pb.ModelVersion:
        """Register a version with a bundle under ``models/{model}/{uuid}/`` in the store."""
        request_id = fields.pop("request_id", "")
        bundle = f"models/{model}/{uuid.uuid4().hex[:8]}"
        ref = self.artifacts.put_bytes(f"{bundle}/model.cbm", b"model-bytes")
        fields.setdefault("artifact_uri", self.artifacts.uri_for(bundle) + "/")
        fields.setdefault("artifact_checksums", {"model.cbm": ref.sha256})
        response = await self.stub.RegisterModelVersion(
            pb.RegisterModelVersionRequest(
                model=model, model_version=pb.ModelVersion(**fields), request_id=request_id
            )
        )
        return response.model_version


def unique_model(prefix: str = "m") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"
