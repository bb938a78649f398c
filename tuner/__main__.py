"""``python -m tuner`` runs the ``lodotune`` command line."""

from .cli import app

app()
