"""Health follows readiness, reflection works with the real grpcurl, shutdown is graceful,
and the bind/TLS rules hold — each through a real server on an ephemeral port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_testkit import (
    SERVICE,
    ProbeRequest,
    ProbeServicer,
    ProbeStub,
    capture_json_logs,
    grpcurl,
    make_settings,
    register_probe,
    serve_probe,
    wait_until,
)

from arbor_core.errors import FailedPrecondition
from arbor_core.server import build_server

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(channel: grpc.aio.Channel, service: str = "") -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return reply.status


class Flag:
    """A readiness check whose answer the test controls."""

    def __init__(self, value: bool = False) -> None:
        self.value = value
        self.error: Exception | None = None
        self.hang = False

    async def __call__(self) -> bool:
        if self.error is not None:
            raise self.error
        if self.hang:
            await asyncio.sleep(60)
        return self.value


async def test_health_not_serving_until_ready_and_flips_back() -> None:
    database, nats = Flag(False), Flag(True)
    async with serve_probe(readiness_checks=[database, nats]) as probe:
        for name in ("", SERVICE):
            assert await health_of(probe.channel, name) == NOT_SERVING
        database.value = True
        await wait_until(lambda: _is(probe.channel, "", SERVING))
        await wait_until(lambda: _is(probe.channel, SERVICE, SERVING))
        nats.value = False  # NATS went away
        await wait_until(lambda: _is(probe.channel, SERVICE, NOT_SERVING))
        assert await health_of(probe.channel, "") == NOT_SERVING
        nats.value = True
        await wait_until(lambda: _is(probe.channel, "", SERVING))
        nats.error = ConnectionError("nats down")  # a check that raises counts as failed
        await wait_until(lambda: _is(probe.channel, "", NOT_SERVING))
        nats.error, nats.hang = None, True  # ... and so does one that hangs
        await asyncio.sleep(0.1)
        await wait_until(lambda: _is(probe.channel, "", NOT_SERVING))
        # Calls are still served while NOT_SERVING: health is advice for the balancer.
        assert (await probe.stub.Echo(ProbeRequest(action="ok"))).value == "ok"


async def _is(channel: grpc.aio.Channel, service: str, status: int) -> bool:
    return await health_of(channel, service) == status


async def test_unknown_service_is_not_found() -> None:
    async with serve_probe() as probe:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health_of(probe.channel, "no.such.Service")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_failed_background_task_turns_not_serving() -> None:
    async def relay() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("relay crashed")

    with capture_json_logs() as logs:
        async with serve_probe(background_tasks=[relay]) as probe:
            await wait_until(lambda: _is(probe.channel, "", SERVING))
            await wait_until(lambda: _is(probe.channel, "", NOT_SERVING))
    [failure] = logs.where(message="background task failed")
    assert "relay crashed" in failure["exception"]


async def test_background_tasks_are_cancelled_on_stop() -> None:
    cancelled = asyncio.Event()

    async def subscriber() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serve_probe(background_tasks=[subscriber]):
        await asyncio.sleep(0.05)
    assert cancelled.is_set()


async def test_reflection_lists_services_with_grpcurl() -> None:
    async with serve_probe() as probe:
        code, out, err = await grpcurl("-plaintext", probe.address, "list")
        assert code == 0, err
        assert set(out.split()) == {
            SERVICE,
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        }
        code, out, err = await grpcurl("-plaintext", probe.address, "describe", SERVICE)
        assert code == 0, err
        assert "rpc Count" in out and "returns ( stream" in out
        # A generic tool sees the typed error details too.
        code, out, err = await grpcurl(
            "-plaintext",
            "-d",
            json.dumps({"action": "notfound"}),
            probe.address,
            f"{SERVICE}/Echo",
        )
        assert code != 0
        assert "NotFound" in err
        assert "PROBE_NOT_FOUND" in err and "google.rpc.ResourceInfo" in err


async def test_graceful_stop_finishes_in_flight_call() -> None:
    servicer = ProbeServicer()
    runner = build_server(make_settings(grace_seconds=5.0), register_probe(servicer))
    await runner.start()
    channel = grpc.aio.insecure_channel(runner.address)
    try:
        stub = ProbeStub(channel)
        await wait_until(lambda: _is(channel, "", SERVING))
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=SERVICE)
        )
        assert (await watch.read()).status == SERVING
        in_flight = asyncio.ensure_future(stub.Echo(ProbeRequest(action="sleep:0.5")))
        await servicer.started.wait()
        started = asyncio.get_running_loop().time()
        stopping = asyncio.ensure_future(runner.stop())
        # Health flips before the server stops taking calls ...
        assert (await asyncio.wait_for(watch.read(), 5)).status == NOT_SERVING
        assert await watch.read() is grpc.aio.EOF  # watchers do not hold the shutdown
        # ... and the call that was already running completes normally.
        assert (await in_flight).value == "slept"
        await stopping
        assert asyncio.get_running_loop().time() - started < 3  # not the whole grace period
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Echo(ProbeRequest(action="ok"), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await runner.stop()  # idempotent
    finally:
        await channel.close()


async def test_refuses_insecure_bind_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARBOR_ALLOW_INSECURE_BIND", raising=False)
    runner = build_server(make_settings(host="0.0.0.0"), register_probe(ProbeServicer()))
    with pytest.raises(FailedPrecondition) as info:
        await runner.start()
    assert info.value.reason == "INSECURE_BIND_REFUSED"

    monkeypatch.setenv("ARBOR_ALLOW_INSECURE_BIND", "1")
    with capture_json_logs() as logs:
        async with serve_probe(make_settings(host="0.0.0.0")) as probe:
            assert (await probe.stub.Echo(ProbeRequest(action="ok"))).value == "ok"
    assert any("beyond loopback" in r["message"] for r in logs.where(level="WARNING"))

    # With authentication configured there is nothing to refuse.
    monkeypatch.delenv("ARBOR_ALLOW_INSECURE_BIND")
    async with serve_probe(make_settings(host="0.0.0.0", auth_tokens=["t0ken"])):
        pass


async def test_warns_when_auth_is_off_on_loopback() -> None:
    with capture_json_logs() as logs:
        async with serve_probe():
            pass
    assert any("authentication is off" in r["message"] for r in logs.where(level="WARNING"))


async def test_port_already_taken_fails_clearly() -> None:
    async with serve_probe() as first:
        runner = build_server(
            make_settings(port=first.runner.port), register_probe(ProbeServicer())
        )
        with pytest.raises(FailedPrecondition) as info:
            await runner.start()
        assert info.value.reason == "BIND_FAILED"


async def test_max_message_size_is_enforced() -> None:
    async with serve_probe(make_settings(max_message_bytes=1024)) as probe:
        assert (await probe.stub.Echo(ProbeRequest(action="echo:" + "x" * 500))).value
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await probe.stub.Echo(ProbeRequest(action="echo:" + "x" * 4096))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arbor_core.clients import channel as arbor_channel

    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("ARBOR_TLS_CERT", str(cert))
    monkeypatch.setenv("ARBOR_TLS_KEY", str(key))
    async with serve_probe() as probe:
        monkeypatch.setenv("ARBOR_CLIENT_TLS_CA", str(cert))
        secure = arbor_channel(f"localhost:{probe.runner.port}")
        try:
            assert (await ProbeStub(secure).Echo(ProbeRequest(action="ok"))).value == "ok"
        finally:
            await secure.close()
        with pytest.raises(grpc.aio.AioRpcError) as info:  # plaintext is refused
            await probe.stub.Echo(ProbeRequest(action="ok"), timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    monkeypatch.delenv("ARBOR_TLS_KEY")
    with pytest.raises(FailedPrecondition) as bad:
        await build_server(make_settings(), register_probe(ProbeServicer())).start()
    assert bad.value.reason == "TLS_CONFIG_INVALID"


_SERVICE_MAIN = """
import sys
sys.path.insert(0, {testdir!r})
from server_testkit import ProbeServicer, make_settings, register_probe
from arbor_core.server import build_server, run_service

async def build(settings):
    return build_server(settings, register_probe(ProbeServicer()))

run_service(make_settings(grace_seconds=3.0, host={host!r}), build)
"""


def _service_script(tmp_path: Path, host: str = "127.0.0.1") -> Path:
    script = tmp_path / "service_main.py"
    script.write_text(_SERVICE_MAIN.format(testdir=str(Path(__file__).parent), host=host))
    return script


@pytest.mark.parametrize("loop", ["", "asyncio"])
async def test_run_service_stops_gracefully_on_sigterm(tmp_path: Path, loop: str) -> None:
    """The real entry point in its own process: JSON logs on stderr, clean exit on SIGTERM,
    on uvloop by default and on asyncio's loop when ``ARBOR_EVENT_LOOP`` asks for it."""
    script = _service_script(tmp_path)
    env = {
        **os.environ,
        "ARBOR_OTEL_EXPORTER": "none",
        "ARBOR_LOG_LEVEL": "INFO",
        "ARBOR_EVENT_LOOP": loop,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stderr=asyncio.subprocess.PIPE, env=env
    )
    assert proc.stderr is not None
    lines: list[dict[str, object]] = []
    try:
        address = None
        while address is None:
            raw = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert raw, "service exited before serving"
            if raw.startswith(b"{"):
                lines.append(json.loads(raw))
                if lines[-1]["message"] == "serving":
                    address = str(lines[-1]["address"])
                    assert lines[-1]["event_loop"] == (loop or "uvloop")
        channel = grpc.aio.insecure_channel(address)
        try:
            await wait_until(lambda: _is(channel, "", SERVING))
            in_flight = asyncio.ensure_future(
                ProbeStub(channel).Echo(ProbeRequest(action="sleep:0.5"))
            )
            await asyncio.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert (await in_flight).value == "slept"
        finally:
            await channel.close()
        _, rest = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    messages = [json.loads(line)["message"] for line in rest.splitlines() if line.startswith(b"{")]
    assert "shutting down" in messages and messages[-1] == "stopped"
    assert all(line["service"] == "probe" for line in lines)


async def test_run_service_refuses_an_unknown_event_loop_as_json(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(_service_script(tmp_path)),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "ARBOR_OTEL_EXPORTER": "none", "ARBOR_EVENT_LOOP": "trio"},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    last = [json.loads(line) for line in err.splitlines() if line.startswith(b"{")][-1]
    assert last["reason"] == "EVENT_LOOP_INVALID"
    assert "ARBOR_EVENT_LOOP" in last["message"] and "'trio'" in last["message"]
    assert b"Traceback" not in err


async def test_run_service_reports_a_refused_start_as_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARBOR_ALLOW_INSECURE_BIND"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(_service_script(tmp_path, host="0.0.0.0")),
        stderr=asyncio.subprocess.PIPE,
        env={**env, "ARBOR_OTEL_EXPORTER": "none"},
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    lines = [json.loads(line) for line in err.splitlines() if line.startswith(b"{")]
    assert lines[-1]["level"] == "ERROR"
    assert lines[-1]["reason"] == "INSECURE_BIND_REFUSED"
    assert b"Traceback" not in err
