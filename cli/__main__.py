"""``python -m cli``: the same as the ``zoo`` console script."""

from zoo.cli.main import run

run()
