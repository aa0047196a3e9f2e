"""``python -m arbor_training``: migrate (unless ARBOR_MIGRATE_ON_START=0), serve until SIGTERM.

Studies run in separate worker processes: ``python -m arbor_training.worker``.
"""

from __future__ import annotations

import os

from arbor_core.config import Settings, load_settings
from arbor_core.logging import configure_logging
from arbor_core.server import ServiceRunner, run_service
from arbor_training.server import build_runner, migrate


async def _build(settings: Settings) -> ServiceRunner:
    return build_runner(settings)


def main() -> None:
    settings = load_settings("training")
    configure_logging(settings.service, settings.log_level)
    if os.environ.get("ARBOR_MIGRATE_ON_START", "1").strip().lower() not in {"0", "false", "no"}:
        migrate(settings)
    run_service(settings, _build)


if __name__ == "__main__":
    main()
