"""Authentication end to end across two real services: training (its API) calls split's
GetSplit on CreateExperiment. Both require bearer tokens; training's outbound channel carries
its own credential (ARBOR_CLIENT_TOKEN), distinct from the caller's. Also: mutual TLS between
the two, and the refusal to listen beyond loopback without authentication.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from reliability_support import (
    PYTHON,
    REPO,
    create_split_request,
    service_settings,
    write_table,
)

from arbor.common.v1 import common_pb2
from arbor.split.v1 import split_service_pb2_grpc as spb_grpc
from arbor.training.v1 import training_service_pb2 as tpb
from arbor.training.v1 import training_service_pb2_grpc as tpb_grpc
from arbor_core.artifacts import LocalArtifactStore
from arbor_core.status_details import error_details

pytestmark = [pytest.mark.integration]

SPLIT_TOKEN = "split-service-token-0123456789"
TRAINING_TOKEN = "training-caller-token-abcdef"


@dataclass
class Pair:
    split: Any
    training: Any
    split_id: str


async def _pair(
    tmp_path: Path,
    nats_url: str,
    ns: str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    client_token: str,
    credentials: grpc.ChannelCredentials | None = None,
) -> AsyncIterator[Pair]:
    from arbor_split.server import build_runner as split_runner
    from arbor_split.server import migrate as split_migrate
    from arbor_training.server import build_runner as training_runner
    from arbor_training.server import migrate as training_migrate

    data = tmp_path / "data"
    source = write_table(data / "t.parquet", rows=200)
    common = {"nats_url": nats_url, "nats_namespace": ns, "home": tmp_path}
    split_settings = service_settings(
        "split",
        database_url=f"sqlite:///{tmp_path / 'split.db'}",
        artifact_uri=str(tmp_path / "artifacts"),
        allowed_data_roots=[str(data)],
        auth_tokens=[SPLIT_TOKEN],
        **common,
    )
    split_migrate(split_settings)
    split = split_runner(
        split_settings, store=LocalArtifactStore(tmp_path / "artifacts"), readiness_interval=0.2
    )
    await split.start()
    # Training's own outbound credential: read when its channel is built.
    monkeypatch.setenv("ARBOR_CLIENT_TOKEN", client_token)
    training_settings = service_settings(
        "training",
        database_url=f"sqlite:///{tmp_path / 'training.db'}",
        auth_tokens=[TRAINING_TOKEN],
        service_addresses={**split_settings.service_addresses, "split": split.address},
        **common,
    )
    training_migrate(training_settings)
    training = training_runner(training_settings, relay_poll_interval=0.1)
    await training.start()
    try:
        async with _channel(split.address, credentials) as channel:
            stub = spb_grpc.SplitServiceStub(channel)
            reply = await stub.CreateSplit(
                create_split_request(str(source), "auth-split"),
                metadata=[("authorization", f"Bearer {SPLIT_TOKEN}")],
                timeout=60,
            )
        yield Pair(split, training, reply.split.split_id)
    finally:
        await training.stop(0.5)
        await split.stop(0.5)


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(
        address, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def _experiment(split_id: str) -> tpb.CreateExperimentRequest:
    return tpb.CreateExperimentRequest(
        experiment=tpb.Experiment(
            split=f"splits/{split_id}",
            model_type=common_pb2.MODEL_TYPE_CATBOOST,
            study=tpb.StudyConfig(n_trials=1, max_iterations=5, threads=1),
        )
    )


async def test_training_calls_split_with_its_own_credentials(
    tmp_path: Path, nats_url: str, nats_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = _pair(tmp_path, nats_url, nats_namespace, monkeypatch, client_token=SPLIT_TOKEN)
    pair = await anext(pairs)
    try:
        async with grpc.aio.insecure_channel(pair.training.address) as channel:
            stub = tpb_grpc.TrainingServiceStub(channel)
            for metadata in ([], [("authorization", "Bearer wrong")], [("authorization", "x")]):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.CreateExperiment(_experiment(pair.split_id), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert error_details(caught.value)["reason"] in {
                    "MISSING_CREDENTIALS",
                    "INVALID_CREDENTIALS",
                }
            # The split's token is not a training token: credentials are per service.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateExperiment(
                    _experiment(pair.split_id),
                    metadata=[("authorization", f"Bearer {SPLIT_TOKEN}")],
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="")
            )
            assert health.status in (health.SERVING, health.NOT_SERVING)  # open without a token
            good = [("authorization", f"Bearer {TRAINING_TOKEN}")]
            # Training looks the split up over gRPC with ARBOR_CLIENT_TOKEN: this only
            # succeeds because split accepted training's own token.
            reply = await stub.CreateExperiment(_experiment(pair.split_id), metadata=good)
            assert reply.experiment.split == f"splits/{pair.split_id}"
    finally:
        await pairs.aclose()


async def test_wrong_service_credential_is_not_passed_off_as_success(
    tmp_path: Path, nats_url: str, nats_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = _pair(tmp_path, nats_url, nats_namespace, monkeypatch, client_token="not-the-token")
    pair = await anext(pairs)
    try:
        async with grpc.aio.insecure_channel(pair.training.address) as channel:
            stub = tpb_grpc.TrainingServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.CreateExperiment(
                    _experiment(pair.split_id),
                    metadata=[("authorization", f"Bearer {TRAINING_TOKEN}")],
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "UNAUTHENTICATED" in caught.value.details()
    finally:
        await pairs.aclose()


# --------------------------------------------------------------------------- TLS


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    if subprocess.run(["which", "openssl"], capture_output=True).returncode != 0:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=arbor-test-ca", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                 f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf",
                 cwd=d)  # fmt: skip
    return d


async def test_mutual_tls_between_services(
    pki: Path,
    tmp_path: Path,
    nats_url: str,
    nats_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Split and training both demand client certificates; training presents its own."""
    monkeypatch.setenv("ARBOR_TLS_CERT", str(pki / "server.pem"))
    monkeypatch.setenv("ARBOR_TLS_KEY", str(pki / "server.key"))
    monkeypatch.setenv("ARBOR_TLS_CLIENT_CA", str(pki / "ca.pem"))
    monkeypatch.setenv("ARBOR_CLIENT_TLS_CA", str(pki / "ca.pem"))
    monkeypatch.setenv("ARBOR_CLIENT_TLS_CERT", str(pki / "client.pem"))
    monkeypatch.setenv("ARBOR_CLIENT_TLS_KEY", str(pki / "client.key"))
    client_creds = grpc.ssl_channel_credentials(
        root_certificates=(pki / "ca.pem").read_bytes(),
        private_key=(pki / "client.key").read_bytes(),
        certificate_chain=(pki / "client.pem").read_bytes(),
    )
    pairs = _pair(
        tmp_path,
        nats_url,
        nats_namespace,
        monkeypatch,
        client_token=SPLIT_TOKEN,
        credentials=client_creds,
    )
    pair = await anext(pairs)
    try:
        good = [("authorization", f"Bearer {TRAINING_TOKEN}")]
        async with _channel(pair.training.address, client_creds) as channel:
            stub = tpb_grpc.TrainingServiceStub(channel)
            reply = await stub.CreateExperiment(_experiment(pair.split_id), metadata=good)
            assert reply.experiment.split == f"splits/{pair.split_id}"
        # Without a client certificate the TLS handshake itself is refused.
        no_cert = grpc.ssl_channel_credentials(root_certificates=(pki / "ca.pem").read_bytes())
        async with _channel(pair.training.address, no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await tpb_grpc.TrainingServiceStub(channel).CreateExperiment(
                    _experiment(pair.split_id), metadata=good, timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # Plaintext to a TLS port gets nowhere either.
        async with grpc.aio.insecure_channel(pair.training.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await tpb_grpc.TrainingServiceStub(channel).CreateExperiment(
                    _experiment(pair.split_id), metadata=good, timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await pairs.aclose()


# --------------------------------------------------------------------------- binding


def test_auth_off_beyond_loopback_is_refused(tmp_path: Path) -> None:
    """A real service process: 0.0.0.0 with auth off exits 2 and says why, in JSON."""
    env = {
        **os.environ,
        "ARBOR_HOME": str(tmp_path),
        "ARBOR_REGISTRY_HOST": "0.0.0.0",
        "ARBOR_REGISTRY_PORT": "0",
        "ARBOR_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "ARBOR_AUTH_TOKENS": "",
        "ARBOR_AUTH_TOKEN_FILE": "",
        "ARBOR_ALLOW_INSECURE_BIND": "",
        "ARBOR_TLS_CLIENT_CA": "",
    }
    done = subprocess.run(
        [PYTHON, "-m", "arbor_registry"], env=env, cwd=REPO, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    lines = [json.loads(line) for line in done.stderr.decode().splitlines() if line.startswith("{")]
    assert any(line.get("reason") == "INSECURE_BIND_REFUSED" for line in lines), done.stderr[-2000:]


def test_token_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arbor_core.config import load_settings

    token_file = tmp_path / "tokens"
    token_file.write_text("first-token\n\n  second-token  \n")
    monkeypatch.setenv("ARBOR_AUTH_TOKENS", "env-token")
    monkeypatch.setenv("ARBOR_AUTH_TOKEN_FILE", str(token_file))
    assert load_settings("split").auth_tokens == ["env-token", "first-token", "second-token"]
