"""`python -m aftershock …` is the same as the `aftershock` console script."""
from aftershock.cli import run

run()
