"""``python -m arbor_inference``: serve until SIGTERM/SIGINT."""

from __future__ import annotations

from arbor_core.config import Settings, load_settings
from arbor_core.server import ServiceRunner, run_service
from arbor_inference.server import build_runner


async def _build(settings: Settings) -> ServiceRunner:
    return build_runner(settings)


def main() -> None:
    run_service(load_settings("inference"), _build)


if __name__ == "__main__":
    main()
