"""``python -m cli``: the same as the ``zoo`` console script."""

from cli.main import run

run()
