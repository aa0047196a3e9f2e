"""``python -m arbor_registry``: migrate (unless ARBOR_MIGRATE_ON_START=0), serve until SIGTERM."""

from __future__ import annotations

from arbor_core.server import service_main
from arbor_registry.server import build_runner, migrate


def main() -> None:
    service_main("registry", build_runner, migrate)


if __name__ == "__main__":
    main()
