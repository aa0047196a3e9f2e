"""``python -m arbor_registry``: migrate (unless ARBOR_MIGRATE_ON_START=0), serve until SIGTERM."""

from __future__ import annotations

from arbor_core.config import Settings, env_flag, load_settings
from arbor_core.logging import configure_logging
from arbor_core.server import ServiceRunner, run_service
from arbor_registry.server import build_runner, migrate


async def _build(settings: Settings) -> ServiceRunner:
    return build_runner(settings)


def main() -> None:
    settings = load_settings("registry")
    configure_logging(settings.service, settings.log_level)
    if env_flag("ARBOR_MIGRATE_ON_START", True):
        migrate(settings)
    run_service(settings, _build)


if __name__ == "__main__":
    main()
