"""The ``arbor`` command-line tool (Typer + rich) over ``arbor_client``."""
