"""Configuration from environment variables, with defaults that run on one machine.

Every variable is documented in README.md; nothing here reads files or the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORTS = {"split": 50051, "training": 50052, "registry": 50053, "inference": 50054}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def env_int(name: str, default: int) -> int:
    """An integer knob from the environment (unset or blank: ``default``)."""
    return int(_env(name, str(default)))


def env_float(name: str, default: float) -> float:
    """A number knob from the environment (unset or blank: ``default``)."""
    return float(_env(name, repr(default)))


def env_flag(name: str, default: bool) -> bool:
    """An on/off knob: 1/true/yes/on are on, anything else off (unset or blank: ``default``)."""
    return _env(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default)
    return [part.strip() for part in raw.split(",") if part.strip()]


@dataclass(frozen=True)
class Settings:
    """What one service process needs to know about its surroundings.

    ``service`` is one of split, training, registry, inference; it picks the default port,
    the SQLite file and the PostgreSQL schema the service owns.
    """

    service: str
    home: Path
    host: str
    port: int
    database_url: str
    nats_url: str
    # Prefixes every JetStream subject and stream name, so that test runs never collide.
    nats_namespace: str
    artifact_uri: str
    allowed_data_roots: list[str]
    max_message_bytes: int
    grace_seconds: float
    log_level: str
    service_addresses: dict[str, str] = field(default_factory=dict)
    auth_tokens: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def db_schema(self) -> str:
        """The PostgreSQL schema this service owns (ignored on SQLite)."""
        return self.service


def load_settings(service: str) -> Settings:
    """Read settings for ``service`` from ``ARBOR_*`` environment variables."""
    home = Path(_env("ARBOR_HOME", ".arbor")).resolve()
    prefix = f"ARBOR_{service.upper()}_"
    port = env_int(prefix + "PORT", DEFAULT_PORTS.get(service, 0))
    default_db = f"sqlite:///{home / (service + '.db')}"
    addresses = {
        name: _env(f"ARBOR_{name.upper()}_ADDRESS", f"127.0.0.1:{default_port}")
        for name, default_port in DEFAULT_PORTS.items()
    }
    tokens = _env_list("ARBOR_AUTH_TOKENS", [])
    token_file = os.environ.get("ARBOR_AUTH_TOKEN_FILE")
    if token_file:
        tokens += [t.strip() for t in Path(token_file).read_text().splitlines() if t.strip()]
    return Settings(
        service=service,
        home=home,
        host=_env(prefix + "HOST", _env("ARBOR_HOST", "127.0.0.1")),
        port=port,
        database_url=_env(prefix + "DATABASE_URL", _env("ARBOR_DATABASE_URL", default_db)),
        nats_url=_env("ARBOR_NATS_URL", "nats://127.0.0.1:4222"),
        nats_namespace=_env("ARBOR_NATS_NAMESPACE", ""),
        artifact_uri=_env("ARBOR_ARTIFACT_URI", str(home / "artifacts")),
        allowed_data_roots=_env_list("ARBOR_ALLOWED_DATA_ROOTS", [str(Path.cwd())]),
        max_message_bytes=env_int("ARBOR_MAX_MESSAGE_BYTES", 64 * 1024 * 1024),
        grace_seconds=float(_env("ARBOR_GRACE_SECONDS", "10")),
        log_level=_env("ARBOR_LOG_LEVEL", "INFO"),
        service_addresses=addresses,
        auth_tokens=tokens,
    )
