"""arbor_client on its own: selectors, config, retries (against a real late-starting server)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from cli_support import LoopThread, server_module, start_service

from arbor.common.v1 import common_pb2
from arbor.inference.v1 import inference_service_pb2
from arbor.split.v1 import split_service_pb2
from arbor_client import (
    ArborClient,
    ArborClientError,
    ClientConfig,
    RetryPolicy,
    SplitClient,
    build_experiment,
    model_version_name,
    parse_selector,
    predictions_to_rows,
    rows_to_inline,
)
from arbor_core.config import load_settings
from arbor_core.testing import free_port


def test_selectors() -> None:
    assert parse_selector("churn").stage.model == "churn"
    assert parse_selector("churn").stage.stage == common_pb2.MODEL_STAGE_UNSPECIFIED
    assert parse_selector("churn:staging").stage.stage == common_pb2.MODEL_STAGE_STAGING
    assert parse_selector("churn@champion").alias.alias == "champion"
    assert parse_selector("churn/3").model_version == "models/churn/versions/3"
    assert parse_selector("models/churn/versions/3").model_version == "models/churn/versions/3"
    assert parse_selector("experiments/abc").experiment == "experiments/abc"
    assert model_version_name("models/churn", 4) == "models/churn/versions/4"
    with pytest.raises(ArborClientError) as caught:
        parse_selector("churn:bogus")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0].field == "model.stage"


def test_build_experiment_takes_friendly_names() -> None:
    experiment = build_experiment(
        "abc", model_type="xgboost", task="binary", sampler="random", pruner="none",
        n_trials=3, study_timeout=90,
    )  # fmt: skip
    assert experiment.split == "splits/abc"
    assert experiment.model_type == common_pb2.MODEL_TYPE_XGBOOST
    assert experiment.study.timeout.seconds == 90
    assert build_experiment("abc", cv_auto=True).study.cv_auto
    with pytest.raises(ArborClientError) as caught:
        build_experiment("abc", model_type="randomforest")
    assert "catboost" in caught.value.message


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARBOR_SPLIT_ADDRESS", "split.internal:7000")
    monkeypatch.setenv("ARBOR_CLIENT_TOKEN", "t0k3n")
    monkeypatch.setenv("ARBOR_CLIENT_TIMEOUT", "7.5")
    config = ClientConfig.from_env(addresses={"registry": "reg:1"})
    assert config.address("split") == "split.internal:7000"
    assert config.address("registry") == "reg:1"
    assert config.address("inference") == "127.0.0.1:50054"
    assert config.timeout == 7.5
    metadata = dict(config.call_metadata())
    assert metadata["authorization"] == "Bearer t0k3n"
    assert metadata["x-request-id"]


def test_rows_and_predictions_round_trip() -> None:
    inline = rows_to_inline(
        [{"a": 1, "b": math.nan, "when": dt.datetime(2024, 1, 2, 3, 4), "c": None}]
    )
    row = inline.json_rows.rows[0]
    assert row["a"] == 1 and row["when"] == "2024-01-02T03:04:00"
    assert row.fields["b"].WhichOneof("kind") == "null_value"
    response = inference_service_pb2.PredictResponse(row_count=2, classes=["no", "yes"])
    response.labels.add().string_value = "yes"
    response.labels.add().string_value = "no"
    response.probabilities.extend([0.2, 0.8, 0.9, 0.1])
    assert predictions_to_rows(response) == [
        {"label": "yes", "proba_no": 0.2, "proba_yes": 0.8},
        {"label": "no", "proba_no": 0.9, "proba_yes": 0.1},
    ]


def test_retry_rule_follows_the_contract() -> None:
    client = SplitClient(address="127.0.0.1:1", config=ClientConfig())
    caller = client._caller
    assert caller.retryable("GetSplit", split_service_pb2.GetSplitRequest())
    assert caller.retryable("ListSplits", split_service_pb2.ListSplitsRequest())
    assert not caller.retryable("UpdateSplit", split_service_pb2.UpdateSplitRequest())
    assert not caller.retryable("CreateSplit", split_service_pb2.CreateSplitRequest())
    assert caller.retryable("CreateSplit", split_service_pb2.CreateSplitRequest(request_id="r"))
    client.close()


def test_mutations_without_request_id_fail_fast_reads_back_off() -> None:
    slow = ClientConfig(retry=RetryPolicy(max_attempts=3, initial_backoff=1.0, max_backoff=2.0))
    with SplitClient(address=f"127.0.0.1:{free_port()}", config=slow) as client:
        started = time.monotonic()
        with pytest.raises(ArborClientError) as caught:
            client.update_split("s", display_name="x")
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 1.0  # one attempt, no backoff

        started = time.monotonic()
        with pytest.raises(ArborClientError):
            client.get_split("s")
        assert time.monotonic() - started >= 1.5  # three attempts, two backoffs


@pytest.mark.integration
def test_reads_retry_until_a_late_server_answers(
    tmp_path: Path, nats_url: str, nats_namespace: str
) -> None:
    """Nothing listens when the call starts; a real split server comes up 1.5 s later on the
    same port and the read gets its real answer (NOT_FOUND) instead of UNAVAILABLE."""
    module = server_module("split")
    if module is None:
        pytest.skip("arbor_split.server.build_runner is not available")
    port = free_port()
    settings = dataclasses.replace(
        load_settings("split"),
        host="127.0.0.1",
        port=port,
        home=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'split.db'}",
        nats_url=nats_url,
        nats_namespace=f"{nats_namespace}late",
        artifact_uri=str(tmp_path / "artifacts"),
        auth_tokens=[],
        grace_seconds=0.2,
    )
    loop = LoopThread()
    runners: list[Any] = []

    def start_later() -> None:
        time.sleep(1.5)
        runners.append(loop.run(start_service("split", settings, module)))

    starter = threading.Thread(target=start_later)
    starter.start()
    patient = ClientConfig(
        addresses={"split": f"127.0.0.1:{port}"},
        timeout=30,
        retry=RetryPolicy(max_attempts=50, initial_backoff=0.1, max_backoff=0.3),
    )
    try:
        with ArborClient(patient) as client, pytest.raises(ArborClientError) as caught:
            client.split.get_split("late-one")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == "SPLIT_NOT_FOUND"
    finally:
        starter.join(60)
        for runner in runners:
            loop.run(runner.stop(0.2))
        loop.close()
