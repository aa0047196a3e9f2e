"""``arbor models`` against a real registry, with versions registered through arbor_client."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from cli_support import Arbor, json_out, one_line

from arbor.registry.v1 import registry_service_pb2 as pb
from arbor_client import ArborClient, ArborClientError
from arbor_core.artifacts import LocalArtifactStore

pytestmark = pytest.mark.integration


def register(client: ArborClient, store: LocalArtifactStore, model: str) -> pb.ModelVersion:
    """A version whose bundle (one file) really exists in the stack's artifact store."""
    bundle = f"models/{model}/{uuid.uuid4().hex[:8]}"
    ref = store.put_bytes(f"{bundle}/model.bin", b"not really a model")
    response = client.registry.register_model_version(
        model,
        pb.ModelVersion(
            artifact_uri=store.uri_for(bundle) + "/",
            artifact_checksums={"model.bin": ref.sha256},
            metrics={"roc_auc": 0.9},
        ),
    )
    assert response.created
    return response.model_version


@pytest.fixture
def registered(cli_stack: Any) -> dict[str, Any]:
    store = LocalArtifactStore(cli_stack.artifact_uri)
    model = f"cli-m-{uuid.uuid4().hex[:6]}"
    with ArborClient.from_env(registry_address=cli_stack.addresses["registry"]) as client:
        versions = [register(client, store, model) for _ in range(2)]
    return {"model": model, "versions": versions, "store": store}


def test_promote_alias_archive_delete(arbor: Arbor, registered: dict[str, Any]) -> None:
    model = registered["model"]
    v1, v2 = (v.name for v in registered["versions"])

    got = json_out(arbor.ok("models", "get", model, "--json").stdout)
    assert [v["name"] for v in got["versions"]] == [v2, v1]  # newest first

    promoted = json_out(arbor.ok("models", "promote", model, "1", "--json").stdout)
    assert promoted["modelVersion"]["stage"] == "MODEL_STAGE_PRODUCTION"
    second = json_out(arbor.ok("models", "promote", f"{model}/2", "--json").stdout)
    assert second["previousProduction"]["name"] == v1
    assert second["previousProduction"]["stage"] == "MODEL_STAGE_ARCHIVED"
    assert "is now production" in arbor.ok("models", "promote", v2).stdout

    assert json_out(arbor.ok("models", "alias", model, "champion", "2", "--json").stdout)
    resolved = json_out(arbor.ok("models", "resolve", f"{model}@champion", "--json").stdout)
    assert resolved["name"] == v2
    removed = json_out(arbor.ok("models", "alias", model, "champion", "--delete", "--json").stdout)
    assert removed["previousVersion"] == "2"
    missing = arbor("models", "resolve", f"{model}@champion")
    assert missing.exit_code == 1 and "NOT_FOUND" in one_line(missing.stderr)

    # Deleting the PRODUCTION version needs --force: a precondition, reported in one line.
    refused = arbor("models", "delete", model, "2", "--json")
    assert refused.exit_code == 1
    error = json.loads(one_line(refused.stderr))["error"]
    assert error["code"] == "FAILED_PRECONDITION" and error["reason"]

    archived = json_out(arbor.ok("models", "archive", model, "2", "--force", "--json").stdout)
    assert archived["stage"] == "MODEL_STAGE_ARCHIVED"

    store = registered["store"]
    bundle_files = [k for k in store.list(f"models/{model}/")]
    assert len(bundle_files) == 2
    deleted = json_out(arbor.ok("models", "delete", model, "--purge", "--json").stdout)
    assert sorted(v["name"] for v in deleted["deletedVersions"]) == sorted([v1, v2])
    assert store.list(f"models/{model}/") == []
    gone = arbor("models", "get", model)
    assert gone.exit_code == 1 and one_line(gone.stderr).startswith("error: NOT_FOUND: ")


def test_models_list_and_human_get(arbor: Arbor, registered: dict[str, Any]) -> None:
    model = registered["model"]
    listing = arbor.ok("models", "list").stdout
    assert model in listing
    human = arbor.ok("models", "get", model).stdout
    assert "versions" in human and "roc_auc=0.9" in human
    version = arbor.ok("models", "get", f"models/{model}/versions/1").stdout
    assert "artifact uri" in version


def test_alias_without_version_is_a_client_error(arbor: Arbor, registered: dict[str, Any]) -> None:
    result = arbor("models", "alias", registered["model"], "champion")
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error: INVALID_ARGUMENT: give the VERSION")


def test_client_error_carries_details(cli_stack: Any) -> None:
    with (
        ArborClient.from_env(
            registry_address=cli_stack.addresses["registry"], token="cli-test-token"
        ) as client,
        pytest.raises(ArborClientError) as caught,
    ):
        client.registry.register_model_version("bad name!", pb.ModelVersion())
    err = caught.value
    assert err.code_name == "INVALID_ARGUMENT"
    fields = {v.field for v in err.field_violations}
    assert {"model", "model_version.artifact_uri"} <= fields
    assert err.request_id
    assert str(err).startswith("INVALID_ARGUMENT: ")


def test_a_promotion_gate_set_from_the_cli_refuses_a_candidate_that_is_not_better(
    arbor: Arbor, registered: dict[str, Any]
) -> None:
    model = registered["model"]  # two versions, both with roc_auc 0.9
    gate = json_out(
        arbor.ok(
            "models", "gate", model, "--metric", "roc_auc", "--min-improvement", "0.01",
            "--alias", "champion", "--json",
        ).stdout
    )  # fmt: skip
    assert gate["promotionGate"]["metric"] == "roc_auc"
    assert gate["promotionGate"]["minImprovement"] == 0.01
    shown = " ".join(arbor.ok("models", "get", model).stdout.split())
    assert "roc_auc (maximize) better by >= 0.01; guards production and champion" in shown

    arbor.ok("models", "promote", model, "1")  # nothing to beat yet
    refused = arbor("models", "promote", model, "2", "--json")
    assert refused.exit_code == 1
    error = json.loads(one_line(refused.stderr))["error"]
    assert error["code"] == "FAILED_PRECONDITION"
    assert "roc_auc" in error["message"] and "0.9" in error["message"]
    resolved = json_out(arbor.ok("models", "resolve", f"{model}:production", "--json").stdout)
    assert resolved["version"] == "1"  # the refused promotion changed nothing

    cleared = json_out(arbor.ok("models", "gate", model, "--clear", "--json").stdout)
    assert "promotionGate" not in cleared
    arbor.ok("models", "promote", model, "2")


def test_a_gate_needs_a_metric_or_clear(arbor: Arbor, registered: dict[str, Any]) -> None:
    result = arbor("models", "gate", registered["model"])
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error: INVALID_ARGUMENT: give the --metric")
