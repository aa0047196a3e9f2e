"""The registry through its real gRPC server: registration, reads, stages, aliases, deletion."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from google.protobuf import struct_pb2
from registry_support import Registry, unique_model

from arbor.common.v1 import common_pb2
from arbor.registry.v1 import registry_service_pb2 as pb
from arbor_core.status_details import error_details

pytestmark = pytest.mark.integration

PROD = common_pb2.MODEL_STAGE_PRODUCTION
STAGING = common_pb2.MODEL_STAGE_STAGING
ARCHIVED = common_pb2.MODEL_STAGE_ARCHIVED
NONE = common_pb2.MODEL_STAGE_NONE


async def rpc_error(call: object) -> dict[str, object]:
    """Await ``call``, expect an RpcError, return its decoded google.rpc details."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return error_details(info.value)


def experiment() -> str:
    return f"experiments/{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- registration


async def test_register_records_lineage_and_get_returns_it(registry: Registry) -> None:
    name = unique_model()
    params = struct_pb2.Struct()
    params.update({"depth": 6, "learning_rate": 0.1, "loss": "Logloss"})
    exp = experiment()
    v = await registry.register(
        name,
        experiment=exp,
        best_trial_number=7,
        split="splits/s1",
        split_content_hash="abc123",
        model_type=common_pb2.MODEL_TYPE_CATBOOST,
        task_type=common_pb2.TASK_TYPE_BINARY,
        metrics={"roc_auc": 0.91},
        params=params,
        signature=pb.ModelSignature(
            inputs=[pb.InputColumn(name="age", dtype="Int64", nullable=True)],
            class_labels=["no", "yes"],
            label_dtype="String",
        ),
        library_versions={"catboost": "1.2.10"},
        labels={"team": "risk"},
        training_rows=1000,
        description="first",
    )
    assert (v.name, v.version, v.stage) == (f"models/{name}/versions/1", 1, NONE)
    assert v.etag and v.create_time.seconds > 0
    got = (
        await registry.stub.GetModelVersion(pb.GetModelVersionRequest(name=v.name))
    ).model_version
    assert got == v
    assert got.experiment == exp and got.best_trial_number == 7
    assert got.split == "splits/s1" and got.split_content_hash == "abc123"
    assert dict(got.params)["depth"] == 6 and got.params["loss"] == "Logloss"
    assert got.signature.inputs[0].nullable and list(got.signature.class_labels) == ["no", "yes"]
    assert dict(got.library_versions) == {"catboost": "1.2.10"}
    assert got.model_type == common_pb2.MODEL_TYPE_CATBOOST
    assert got.task_type == common_pb2.TASK_TYPE_BINARY
    assert len(got.artifact_checksums["model.cbm"]) == 64

    v2 = await registry.register(name, labels={"owner": "ana"})
    assert v2.version == 2
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert model.model.latest_version == 2 and model.model.production_version == 0
    assert dict(model.model.labels) == {"team": "risk", "owner": "ana"}
    assert [x.version for x in model.versions] == [2, 1]


async def test_list_paginates_with_opaque_tokens_and_filters(registry: Registry) -> None:
    name = unique_model("page")
    tag = uuid.uuid4().hex[:8]
    for _ in range(5):
        await registry.register(name, labels={"batch": tag})
    seen: list[int] = []
    token = ""
    while True:
        page = await registry.stub.ListModelVersions(
            pb.ListModelVersionsRequest(parent=f"models/{name}", page_size=2, page_token=token)
        )
        seen += [v.version for v in page.model_versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [5, 4, 3, 2, 1]

    first = await registry.stub.ListModelVersions(
        pb.ListModelVersionsRequest(parent=f"models/{name}", page_size=2)
    )
    err = await rpc_error(
        registry.stub.ListModelVersions(
            pb.ListModelVersionsRequest(
                parent=f"models/{name}", page_size=2, page_token=first.next_page_token + "x"
            )
        )
    )
    assert err["code"] == "INVALID_ARGUMENT" and err["reason"] == "INVALID_PAGE_TOKEN"
    err = await rpc_error(
        registry.stub.ListModelVersions(
            pb.ListModelVersionsRequest(
                parent=f"models/{name}",
                page_size=2,
                page_token=first.next_page_token,
                stage_filter=PROD,
            )
        )
    )
    assert err["reason"] == "PAGE_TOKEN_FILTER_MISMATCH"

    await registry.stub.PromoteModel(
        pb.PromoteModelRequest(name=f"models/{name}/versions/2", stage=STAGING)
    )
    staged = await registry.stub.ListModelVersions(
        pb.ListModelVersionsRequest(parent=f"models/{name}", stage_filter=STAGING)
    )
    assert [v.version for v in staged.model_versions] == [2]

    others = [unique_model("page") for _ in range(3)]
    for other in others:
        await registry.register(other, labels={"batch": tag, "team.io/owner": "ml"})
    only_others = await registry.stub.ListModels(
        pb.ListModelsRequest(label_filter={"batch": tag, "team.io/owner": "ml"})
    )
    assert [m.model for m in only_others.models] == sorted(others)
    names: list[str] = []
    token = ""
    while True:
        page = await registry.stub.ListModels(
            pb.ListModelsRequest(page_size=1, page_token=token, label_filter={"batch": tag})
        )
        names += [m.model for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert names == sorted([name, *others])
    capped = await registry.stub.ListModels(pb.ListModelsRequest(page_size=100_000))
    assert len(capped.models) <= 1000


async def test_register_is_idempotent_on_request_id_and_experiment(registry: Registry) -> None:
    name = unique_model()
    request_id = uuid.uuid4().hex
    first = await registry.register(name, request_id=request_id)
    again = await registry.stub.RegisterModelVersion(
        pb.RegisterModelVersionRequest(
            model=name,
            request_id=request_id,
            model_version=pb.ModelVersion(artifact_uri=first.artifact_uri),
        )
    )
    assert not again.created and again.model_version.name == first.name

    exp = experiment()
    by_exp = await registry.register(name, experiment=exp)
    retry = await registry.stub.RegisterModelVersion(
        pb.RegisterModelVersionRequest(
            model=name,
            request_id=uuid.uuid4().hex,  # a retry after a timeout may carry a fresh request id
            model_version=pb.ModelVersion(experiment=exp, artifact_uri=by_exp.artifact_uri),
        )
    )
    assert not retry.created and retry.model_version.version == by_exp.version == 2
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert model.model.latest_version == 2

    err = await rpc_error(registry.register(unique_model(), experiment=exp))
    assert err["code"] == "ALREADY_EXISTS" and err["reason"] == "EXPERIMENT_ALREADY_REGISTERED"


async def test_concurrent_registrations_get_consecutive_versions(registry: Registry) -> None:
    name = unique_model("race")
    count = 12
    replay = uuid.uuid4().hex
    results = await asyncio.gather(
        *(registry.register(name) for _ in range(count)),
        # Two concurrent calls with one request_id: they count once.
        registry.register(name, request_id=replay),
        registry.register(name, request_id=replay),
    )
    assert sorted({v.version for v in results}) == list(range(1, count + 2))
    assert results[-1].name == results[-2].name
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert model.model.latest_version == count + 1
    assert sorted(v.version for v in model.versions) == list(range(1, count + 2))


async def test_concurrent_registrations_of_one_experiment_create_one_version(
    pg_registry: Registry,
) -> None:
    name, exp = unique_model("race"), experiment()
    results = await asyncio.gather(*(pg_registry.register(name, experiment=exp) for _ in range(8)))
    assert {v.version for v in results} == {1}


# --------------------------------------------------------------------------- stages


async def test_promote_moves_previous_production_out_atomically(registry: Registry) -> None:
    name = unique_model()
    v1, v2, v3 = [await registry.register(name) for _ in range(3)]
    r1 = await registry.stub.PromoteModel(pb.PromoteModelRequest(name=v1.name, stage=PROD))
    assert r1.model_version.stage == PROD and not r1.HasField("previous_production")
    r2 = await registry.stub.PromoteModel(pb.PromoteModelRequest(name=v2.name, stage=PROD))
    assert r2.previous_production.name == v1.name
    assert r2.previous_production.stage == ARCHIVED
    r3 = await registry.stub.PromoteModel(
        pb.PromoteModelRequest(name=v3.name, stage=PROD, previous_production_stage=STAGING)
    )
    assert r3.previous_production.name == v2.name and r3.previous_production.stage == STAGING
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    stages = {v.version: v.stage for v in model.versions}
    assert stages == {1: ARCHIVED, 2: STAGING, 3: PROD}
    assert model.model.production_version == 3

    err = await rpc_error(
        registry.stub.PromoteModel(pb.PromoteModelRequest(name=v1.name, stage=ARCHIVED))
    )
    assert err["code"] == "INVALID_ARGUMENT"
    assert [f["field"] for f in err["field_violations"]] == ["stage"]  # type: ignore[union-attr]


async def test_at_most_one_production_under_concurrent_promotions(registry: Registry) -> None:
    name = unique_model("prod")
    versions = [await registry.register(name) for _ in range(8)]
    await asyncio.gather(
        *(
            registry.stub.PromoteModel(pb.PromoteModelRequest(name=v.name, stage=PROD))
            for v in versions
        )
    )
    listed = await registry.stub.ListModelVersions(
        pb.ListModelVersionsRequest(parent=f"models/{name}")
    )
    stages = [v.stage for v in listed.model_versions]
    assert stages.count(PROD) == 1 and stages.count(ARCHIVED) == 7
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    winner = next(v.version for v in listed.model_versions if v.stage == PROD)
    assert model.model.production_version == winner


async def test_stale_etag_is_aborted(registry: Registry) -> None:
    name = unique_model()
    v = await registry.register(name)
    staged = await registry.stub.PromoteModel(
        pb.PromoteModelRequest(name=v.name, stage=STAGING, etag=v.etag)
    )
    assert staged.model_version.etag != v.etag
    err = await rpc_error(
        registry.stub.PromoteModel(pb.PromoteModelRequest(name=v.name, stage=PROD, etag=v.etag))
    )
    assert err["code"] == "ABORTED" and err["reason"] == "ETAG_MISMATCH"
    err = await rpc_error(
        registry.stub.ArchiveModel(pb.ArchiveModelRequest(name=v.name, etag=v.etag))
    )
    assert err["code"] == "ABORTED"
    ok = await registry.stub.PromoteModel(
        pb.PromoteModelRequest(name=v.name, stage=PROD, etag=staged.model_version.etag)
    )
    assert ok.model_version.stage == PROD


async def test_archived_and_deleted_versions_cannot_be_promoted(registry: Registry) -> None:
    name = unique_model()
    v1, v2, v3 = [await registry.register(name) for _ in range(3)]
    await registry.stub.ArchiveModel(pb.ArchiveModelRequest(name=v1.name))
    err = await rpc_error(
        registry.stub.PromoteModel(pb.PromoteModelRequest(name=v1.name, stage=PROD))
    )
    assert err["code"] == "FAILED_PRECONDITION" and err["reason"] == "VERSION_ARCHIVED"
    assert err["precondition_violations"]
    ok = await registry.stub.PromoteModel(
        pb.PromoteModelRequest(name=v1.name, stage=PROD, allow_archived=True)
    )
    assert ok.model_version.stage == PROD

    await registry.stub.DeleteModel(pb.DeleteModelRequest(name=v2.name))
    err = await rpc_error(
        registry.stub.PromoteModel(
            pb.PromoteModelRequest(name=v2.name, stage=PROD, allow_archived=True)
        )
    )
    assert err["code"] == "FAILED_PRECONDITION" and err["reason"] == "VERSION_DELETED"

    err = await rpc_error(registry.stub.ArchiveModel(pb.ArchiveModelRequest(name=v1.name)))
    assert err["code"] == "FAILED_PRECONDITION" and err["reason"] == "VERSION_IN_PRODUCTION"
    forced = await registry.stub.ArchiveModel(pb.ArchiveModelRequest(name=v1.name, force=True))
    assert forced.model_version.stage == ARCHIVED
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert model.model.production_version == 0
    assert [v.version for v in model.versions] == [3, 1]
    assert v3.stage == NONE


# --------------------------------------------------------------------------- aliases & resolve


async def test_aliases_set_move_delete_and_resolve(registry: Registry) -> None:
    name = unique_model()
    v1, v2 = [await registry.register(name) for _ in range(2)]
    set1 = await registry.stub.SetAlias(
        pb.SetAliasRequest(model=f"models/{name}", alias="champion", version=1)
    )
    assert set1.previous_version == 0 and list(set1.model_version.aliases) == ["champion"]
    await registry.stub.SetAlias(
        pb.SetAliasRequest(model=f"models/{name}", alias="challenger", version=2)
    )
    moved = await registry.stub.SetAlias(
        pb.SetAliasRequest(model=f"models/{name}", alias="champion", version=2)
    )
    assert moved.previous_version == 1
    assert sorted(moved.model_version.aliases) == ["challenger", "champion"]
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert dict(model.model.aliases) == {"champion": 2, "challenger": 2}
    assert {v.version: list(v.aliases) for v in model.versions}[1] == []

    selector = common_pb2.ModelSelector(
        alias=common_pb2.AliasSelector(model=name, alias="champion")
    )
    resolved = await registry.stub.ResolveModel(pb.ResolveModelRequest(selector=selector))
    assert resolved.model_version.name == v2.name

    deleted = await registry.stub.DeleteAlias(
        pb.DeleteAliasRequest(model=f"models/{name}", alias="champion")
    )
    assert deleted.previous_version == 2
    err = await rpc_error(registry.stub.ResolveModel(pb.ResolveModelRequest(selector=selector)))
    assert err["code"] == "NOT_FOUND" and err["resource_info"]["resource_type"] == "model_version"  # type: ignore[index]
    err = await rpc_error(
        registry.stub.DeleteAlias(pb.DeleteAliasRequest(model=f"models/{name}", alias="champion"))
    )
    assert err["code"] == "NOT_FOUND" and err["reason"] == "ALIAS_NOT_FOUND"
    err = await rpc_error(
        registry.stub.SetAlias(pb.SetAliasRequest(model=f"models/{name}", alias="Bad!", version=1))
    )
    assert err["code"] == "INVALID_ARGUMENT" and err["field_violations"][0]["field"] == "alias"  # type: ignore[index]
    err = await rpc_error(
        registry.stub.SetAlias(pb.SetAliasRequest(model=f"models/{name}", alias="x", version=9))
    )
    assert err["code"] == "NOT_FOUND"
    assert v1.version == 1


async def test_resolve_every_selector_and_never_deleted(registry: Registry) -> None:
    name, exp = unique_model(), experiment()
    v1 = await registry.register(name, experiment=exp)
    v2 = await registry.register(name)
    v3 = await registry.register(name)

    async def resolve(**selector: object) -> str:
        response = await registry.stub.ResolveModel(
            pb.ResolveModelRequest(selector=common_pb2.ModelSelector(**selector))  # type: ignore[arg-type]
        )
        return response.model_version.name

    assert await resolve(model_version=v2.name) == v2.name
    assert await resolve(experiment=exp) == v1.name
    await registry.stub.PromoteModel(pb.PromoteModelRequest(name=v1.name, stage=PROD))
    await registry.stub.PromoteModel(pb.PromoteModelRequest(name=v2.name, stage=STAGING))
    await registry.stub.PromoteModel(pb.PromoteModelRequest(name=v3.name, stage=STAGING))
    assert await resolve(stage=common_pb2.StageSelector(model=name)) == v1.name
    assert await resolve(stage=common_pb2.StageSelector(model=name, stage=STAGING)) == v3.name

    await registry.stub.DeleteModel(pb.DeleteModelRequest(name=v1.name, force=True))
    for selector in (
        {"model_version": v1.name},
        {"experiment": exp},
        {"stage": common_pb2.StageSelector(model=name)},
    ):
        err = await rpc_error(resolve(**selector))
        assert err["code"] == "NOT_FOUND", selector
        assert err["resource_info"] is not None
    err = await rpc_error(registry.stub.ResolveModel(pb.ResolveModelRequest()))
    assert err["code"] == "INVALID_ARGUMENT" and err["field_violations"][0]["field"] == "selector"  # type: ignore[index]
    err = await rpc_error(resolve(model_version="models/x/versions/zero"))
    assert err["field_violations"][0]["field"] == "selector.model_version"  # type: ignore[index]


# --------------------------------------------------------------------------- deletion


async def test_soft_delete_keeps_artifacts_and_purge_removes_them(registry: Registry) -> None:
    name = unique_model("del")
    store = registry.artifacts
    soft = await registry.register(name, artifact_uri=store.uri_for(f"models/{name}/v1"))
    purged = await registry.register(name, artifact_uri=store.uri_for(f"models/{name}/v10") + "/")
    for key in (f"models/{name}/v1/model.cbm", f"models/{name}/v10/model.cbm"):
        store.put_bytes(key, b"bytes")

    r = await registry.stub.DeleteModel(pb.DeleteModelRequest(name=soft.name))
    assert [v.name for v in r.deleted_versions] == [soft.name]
    assert r.deleted_versions[0].HasField("delete_time")
    assert store.exists(f"models/{name}/v1/model.cbm")
    err = await rpc_error(registry.stub.GetModelVersion(pb.GetModelVersionRequest(name=soft.name)))
    assert err["code"] == "NOT_FOUND"
    shown = await registry.stub.GetModelVersion(
        pb.GetModelVersionRequest(name=soft.name, show_deleted=True)
    )
    assert shown.model_version.HasField("delete_time")

    await registry.stub.DeleteModel(pb.DeleteModelRequest(name=purged.name, purge=True))
    assert not store.exists(f"models/{name}/v10/model.cbm")
    assert store.exists(f"models/{name}/v1/model.cbm")  # "v1" is not a prefix match of "v10/"

    # A purge after a soft delete finishes the job.
    await registry.stub.DeleteModel(pb.DeleteModelRequest(name=soft.name, purge=True))
    assert not store.exists(f"models/{name}/v1/model.cbm")
    err = await rpc_error(registry.stub.DeleteModel(pb.DeleteModelRequest(name=soft.name)))
    assert err["code"] == "NOT_FOUND"


async def test_purge_refuses_artifacts_outside_the_store(registry: Registry, tmp_path) -> None:  # type: ignore[no-untyped-def]
    name = unique_model("del")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("precious")
    candidates = [
        outside.as_uri(),
        registry.artifacts.uri_for("models") + "/../../elsewhere",
        registry.artifacts.uri_for("x")[:-1],  # the store root itself
        "gs://some-bucket/models/x/",
    ]
    for uri in candidates:
        v = await registry.register(name, artifact_uri=uri)
        err = await rpc_error(
            registry.stub.DeleteModel(pb.DeleteModelRequest(name=v.name, purge=True))
        )
        assert err["code"] == "FAILED_PRECONDITION", uri
        assert err["reason"] == "ARTIFACT_URI_OUTSIDE_STORE", uri
        # Refused before anything changed: the version is still live.
        got = await registry.stub.GetModelVersion(pb.GetModelVersionRequest(name=v.name))
        assert not got.model_version.HasField("delete_time")
        # A live version whose bundle is the whole store would block every other purge.
        await registry.stub.DeleteModel(pb.DeleteModelRequest(name=v.name))
    assert (outside / "keep.txt").read_text() == "precious"


async def test_deleting_production_needs_force_and_whole_model_delete(registry: Registry) -> None:
    name = unique_model("del")
    v1, v2 = [await registry.register(name) for _ in range(2)]
    await registry.stub.PromoteModel(pb.PromoteModelRequest(name=v1.name, stage=PROD))
    await registry.stub.SetAlias(pb.SetAliasRequest(model=name, alias="champion", version=1))
    err = await rpc_error(registry.stub.DeleteModel(pb.DeleteModelRequest(name=v1.name)))
    assert err["code"] == "FAILED_PRECONDITION" and err["reason"] == "VERSION_IN_PRODUCTION"
    err = await rpc_error(registry.stub.DeleteModel(pb.DeleteModelRequest(name=f"models/{name}")))
    assert err["code"] == "FAILED_PRECONDITION"

    r = await registry.stub.DeleteModel(pb.DeleteModelRequest(name=v1.name, force=True))
    assert r.deleted_versions[0].stage == PROD
    model = await registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}"))
    assert model.model.production_version == 0 and dict(model.model.aliases) == {}

    bundle = v2.artifact_uri
    assert registry.artifacts.list(f"models/{name}/")
    r = await registry.stub.DeleteModel(pb.DeleteModelRequest(name=f"models/{name}", purge=True))
    assert {v.version for v in r.deleted_versions} == {1, 2}
    assert registry.artifacts.list(f"models/{name}/") == [], bundle
    err = await rpc_error(registry.stub.GetModel(pb.GetModelRequest(name=f"models/{name}")))
    assert err["code"] == "NOT_FOUND" and err["reason"] == "MODEL_NOT_FOUND"
    shown = await registry.stub.GetModel(
        pb.GetModelRequest(name=f"models/{name}", show_deleted=True)
    )
    assert shown.model.HasField("delete_time") and len(shown.versions) == 2

    # The name lives on: registering again continues the numbering, never reusing a version.
    again = await registry.register(name)
    assert again.version == 3


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("model", "fields", "request_id", "bad_fields"),
    [
        ("bad name!", {}, "", ["model"]),
        ("x" * 129, {}, "", ["model"]),
        ("ok", {"artifact_uri": ""}, "", ["model_version.artifact_uri"]),
        ("ok", {"labels": {f"k{i}": "v" for i in range(65)}}, "", ["model_version.labels"]),
        ("ok", {"labels": {"bad key": "v"}}, "", ["model_version.labels[bad key]"]),
        ("ok", {"labels": {"k": "v" * 300}}, "", ["model_version.labels[k]"]),
        ("ok", {"metrics": {"auc": float("nan")}}, "", ["model_version.metrics[auc]"]),
        (
            "ok",
            {"artifact_checksums": {"m.cbm": "XYZ"}},
            "",
            ["model_version.artifact_checksums[m.cbm]"],
        ),
        ("ok", {"experiment": "exp-1"}, "", ["model_version.experiment"]),
        ("ok", {"split": "splits/"}, "", ["model_version.split"]),
        ("ok", {}, "bad id with spaces", ["request_id"]),
        ("bad/name", {"experiment": "nope"}, "", ["model", "model_version.experiment"]),
    ],
)
async def test_bad_registrations_name_the_field(
    pg_registry: Registry,
    model: str,
    fields: dict[str, object],
    request_id: str,
    bad_fields: list[str],
) -> None:
    fields = {"artifact_uri": "gs://b/models/x/", **fields}
    err = await rpc_error(
        pg_registry.stub.RegisterModelVersion(
            pb.RegisterModelVersionRequest(
                model=model,
                request_id=request_id,
                model_version=pb.ModelVersion(**fields),  # type: ignore[arg-type]
            )
        )
    )
    assert err["code"] == "INVALID_ARGUMENT"
    assert err["domain"] == "arbor.dev" and err["reason"]
    assert [f["field"] for f in err["field_violations"]] == bad_fields  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("call", "message", "field"),
    [
        ("GetModel", pb.GetModelRequest(name="models/bad name"), "name"),
        ("GetModelVersion", pb.GetModelVersionRequest(name="models/x/versions/0"), "name"),
        ("GetModelVersion", pb.GetModelVersionRequest(name="models/x"), "name"),
        (
            "ListModelVersions",
            pb.ListModelVersionsRequest(parent="models/x", page_size=-1),
            "page_size",
        ),
        ("ListModels", pb.ListModelsRequest(page_token="garbage"), "page_token"),
        (
            "ListModels",
            pb.ListModelsRequest(label_filter={"bad key": "v"}),
            "label_filter[bad key]",
        ),
        ("PromoteModel", pb.PromoteModelRequest(name="models/x/versions/1"), "stage"),
        (
            "PromoteModel",
            pb.PromoteModelRequest(
                name="models/x/versions/1", stage=PROD, previous_production_stage=PROD
            ),
            "previous_production_stage",
        ),
        ("SetAlias", pb.SetAliasRequest(model="models/x", alias="9lives", version=1), "alias"),
        ("SetAlias", pb.SetAliasRequest(model="models/x", alias="ok", version=0), "version"),
        ("DeleteAlias", pb.DeleteAliasRequest(model="models/x", alias="A" * 70), "alias"),
        ("DeleteModel", pb.DeleteModelRequest(name="x"), "name"),
        ("ArchiveModel", pb.ArchiveModelRequest(name="models/../versions/1"), "name"),
    ],
)
async def test_bad_requests_name_the_field(
    pg_registry: Registry, call: str, message: object, field: str
) -> None:
    err = await rpc_error(getattr(pg_registry.stub, call)(message))
    assert err["code"] == "INVALID_ARGUMENT"
    assert [f["field"] for f in err["field_violations"]] == [field]  # type: ignore[union-attr]
