"""RegistryClient: model versions, stages, aliases; and ``parse_selector`` for short names."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as pb
from arbor.registry.v1 import registry_service_pb2_grpc as pb_grpc
from arbor_client._base import ServiceClient, resource_name
from arbor_client._enums import parse_enum
from arbor_client._transport import new_request_id
from arbor_client.errors import ArborClientError

__all__ = ["RegistryClient", "Selector", "model_version_name", "parse_selector"]

Selector: TypeAlias = common_pb2.ModelSelector | str
_VERSION_RE = re.compile(r"^(?:models/)?([^/@:]+)/(?:versions/)?(\d+)$")


def model_version_name(model: str, version: int | str | None = None) -> str:
    """``("churn", 3)``, ``"churn/3"``, ``"models/churn/versions/3"`` -> the version name."""
    if version is None:
        match = _VERSION_RE.match(model.strip())
        if not match:
            raise ArborClientError.invalid_argument(
                f"{model!r} is not a model version; use NAME/VERSION or "
                "models/NAME/versions/VERSION",
                field="name",
            )
        model, version = match.group(1), match.group(2)
    name = model.removeprefix("models/")
    return f"models/{name}/versions/{int(version)}"


def parse_selector(selector: Selector) -> common_pb2.ModelSelector:
    """A ModelSelector from a message or one of these strings:

    ``models/churn/versions/3`` or ``churn/3`` (a version), ``experiments/abc`` (the version an
    experiment registered), ``churn@champion`` (an alias), ``churn:staging`` (a stage),
    ``churn`` (the PRODUCTION version).
    """
    if isinstance(selector, common_pb2.ModelSelector):
        return selector
    text = selector.strip()
    if not text:
        raise ArborClientError.invalid_argument("a model selector is required", field="model")
    if text.startswith("experiments/"):
        return common_pb2.ModelSelector(experiment=text)
    if _VERSION_RE.match(text):
        return common_pb2.ModelSelector(model_version=model_version_name(text))
    text = text.removeprefix("models/")
    if "@" in text:
        model, alias = text.split("@", 1)
        return common_pb2.ModelSelector(alias=common_pb2.AliasSelector(model=model, alias=alias))
    if ":" in text:
        model, stage = text.split(":", 1)
        return common_pb2.ModelSelector(
            stage=common_pb2.StageSelector(
                model=model,
                stage=parse_enum(common_pb2.ModelStage, stage, "model.stage"),  # type: ignore[arg-type]
            )
        )
    return common_pb2.ModelSelector(stage=common_pb2.StageSelector(model=text))


class RegistryClient(ServiceClient):
    """``arbor.registry.v1.RegistryService``."""

    service = "registry"
    grpc_service = "arbor.registry.v1.RegistryService"
    stub_class = pb_grpc.RegistryServiceStub

    def register_model_version(
        self,
        model: str,
        model_version: pb.ModelVersion,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.RegisterModelVersionResponse:
        """Register the next version (idempotent on the generated request id)."""
        request = pb.RegisterModelVersionRequest(
            model=model.removeprefix("models/"),
            model_version=model_version,
            request_id=request_id or new_request_id(),
        )
        return self._call("RegisterModelVersion", request, timeout)  # type: ignore[no-any-return]

    def get_model(
        self, name: str, *, show_deleted: bool = False, timeout: float | None = None
    ) -> pb.GetModelResponse:
        """The model and up to 100 of its versions, newest first."""
        request = pb.GetModelRequest(name=resource_name("models", name), show_deleted=show_deleted)
        return self._call("GetModel", request, timeout)  # type: ignore[no-any-return]

    def list_models(
        self,
        *,
        page_size: int = 0,
        page_token: str = "",
        labels: Mapping[str, str] | None = None,
        show_deleted: bool = False,
        timeout: float | None = None,
    ) -> pb.ListModelsResponse:
        request = pb.ListModelsRequest(
            page_size=page_size,
            page_token=page_token,
            label_filter=dict(labels or {}),
            show_deleted=show_deleted,
        )
        return self._call("ListModels", request, timeout)  # type: ignore[no-any-return]

    def iter_models(self, *, limit: int | None = None, **filters: Any) -> Iterator[pb.Model]:
        token, seen = "", 0
        while True:
            page = self.list_models(page_token=token, **filters)
            for model in page.models:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield model
            token = page.next_page_token
            if not token:
                return

    def get_model_version(
        self,
        name: str,
        version: int | None = None,
        *,
        show_deleted: bool = False,
        timeout: float | None = None,
    ) -> pb.ModelVersion:
        request = pb.GetModelVersionRequest(
            name=model_version_name(name, version), show_deleted=show_deleted
        )
        return self._call("GetModelVersion", request, timeout).model_version  # type: ignore[no-any-return]

    def list_model_versions(
        self,
        model: str,
        *,
        page_size: int = 0,
        page_token: str = "",
        stage: str | int | None = None,
        show_deleted: bool = False,
        timeout: float | None = None,
    ) -> pb.ListModelVersionsResponse:
        request = pb.ListModelVersionsRequest(
            parent=resource_name("models", model, "parent"),
            page_size=page_size,
            page_token=page_token,
            stage_filter=parse_enum(common_pb2.ModelStage, stage, "stage_filter"),  # type: ignore[arg-type]
            show_deleted=show_deleted,
        )
        return self._call("ListModelVersions", request, timeout)  # type: ignore[no-any-return]

    def iter_model_versions(
        self, model: str, *, stage: str | int | None = None, show_deleted: bool = False
    ) -> Iterator[pb.ModelVersion]:
        token = ""
        while True:
            page = self.list_model_versions(
                model, page_token=token, stage=stage, show_deleted=show_deleted
            )
            yield from page.model_versions
            token = page.next_page_token
            if not token:
                return

    def promote_model(
        self,
        name: str,
        version: int | None = None,
        *,
        stage: str | int = "production",
        previous_production_stage: str | int | None = None,
        etag: str = "",
        allow_archived: bool = False,
        timeout: float | None = None,
    ) -> pb.PromoteModelResponse:
        """Move a version to STAGING or PRODUCTION (the old PRODUCTION one moves out)."""
        request = pb.PromoteModelRequest(
            name=model_version_name(name, version),
            stage=parse_enum(common_pb2.ModelStage, stage, "stage"),  # type: ignore[arg-type]
            previous_production_stage=parse_enum(  # type: ignore[arg-type]
                common_pb2.ModelStage, previous_production_stage, "previous_production_stage"
            ),
            etag=etag,
            allow_archived=allow_archived,
        )
        return self._call("PromoteModel", request, timeout)  # type: ignore[no-any-return]

    def set_alias(
        self, model: str, alias: str, version: int, *, timeout: float | None = None
    ) -> pb.SetAliasResponse:
        """Point ``alias`` at ``version``; setting the same alias twice is harmless (retried)."""
        request = pb.SetAliasRequest(
            model=resource_name("models", model, "model"), alias=alias, version=version
        )
        return self._call("SetAlias", request, timeout, retryable=True)  # type: ignore[no-any-return]

    def delete_alias(
        self, model: str, alias: str, *, timeout: float | None = None
    ) -> pb.DeleteAliasResponse:
        request = pb.DeleteAliasRequest(model=resource_name("models", model, "model"), alias=alias)
        return self._call("DeleteAlias", request, timeout)  # type: ignore[no-any-return]

    def set_promotion_gate(
        self,
        model: str,
        *,
        metric: str,
        min_improvement: float = 0.0,
        max_latency: float = 0.0,
        direction: str | int | None = None,
        latency_metric: str = "",
        allow_different_split: bool = False,
        guarded_aliases: Sequence[str] = (),
        timeout: float | None = None,
    ) -> pb.Model:
        """Guard PRODUCTION (and ``champion``, or ``guarded_aliases``): a candidate must beat
        the current version on ``metric`` by ``min_improvement`` and keep its latency metric
        (``predict_ms_per_1k_rows`` by default) at or under ``max_latency`` (0: unchecked).
        Setting the same gate twice is harmless (retried)."""
        gate = pb.PromotionGate(
            metric=metric,
            direction=parse_enum(pb.MetricDirection, direction, "direction"),  # type: ignore[arg-type]
            min_improvement=min_improvement,
            max_latency=max_latency,
            latency_metric=latency_metric,
            allow_different_split=allow_different_split,
            guarded_aliases=list(guarded_aliases),
        )
        request = pb.SetPromotionGateRequest(
            model=resource_name("models", model, "model"), gate=gate
        )
        return self._call("SetPromotionGate", request, timeout, retryable=True).model  # type: ignore[no-any-return]

    def clear_promotion_gate(self, model: str, *, timeout: float | None = None) -> pb.Model:
        """Remove the model's promotion gate (promotions are then unchecked)."""
        request = pb.SetPromotionGateRequest(model=resource_name("models", model, "model"))
        return self._call("SetPromotionGate", request, timeout, retryable=True).model  # type: ignore[no-any-return]

    def archive_model(
        self,
        name: str,
        version: int | None = None,
        *,
        etag: str = "",
        force: bool = False,
        timeout: float | None = None,
    ) -> pb.ModelVersion:
        request = pb.ArchiveModelRequest(
            name=model_version_name(name, version), etag=etag, force=force
        )
        return self._call("ArchiveModel", request, timeout).model_version  # type: ignore[no-any-return]

    def delete_model(
        self,
        name: str,
        version: int | None = None,
        *,
        purge: bool = False,
        force: bool = False,
        etag: str = "",
        timeout: float | None = None,
    ) -> list[pb.ModelVersion]:
        """Delete one version (``name`` + ``version``, or ``"churn/3"``) or a whole model."""
        if version is not None or _VERSION_RE.match(name.strip()):
            target = model_version_name(name, version)
        else:
            target = resource_name("models", name)
        request = pb.DeleteModelRequest(name=target, purge=purge, force=force, etag=etag)
        return list(self._call("DeleteModel", request, timeout).deleted_versions)

    def resolve_model(self, selector: Selector, *, timeout: float | None = None) -> pb.ModelVersion:
        request = pb.ResolveModelRequest(selector=parse_selector(selector))
        return self._call("ResolveModel", request, timeout).model_version  # type: ignore[no-any-return]
