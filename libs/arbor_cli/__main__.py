"""``python -m arbor_cli``: the same as the ``arbor`` script."""

from arbor_cli.main import app

app()
