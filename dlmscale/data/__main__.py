"""python -m dlmscale.data: prepares data on its own and prints a summary (pipeline._main)."""

import sys

from dlmscale.commands import guard as cli_guard
from dlmscale.data import pipeline

pipeline._define_flags()  # pylint: disable=protected-access
sys.exit(cli_guard.guard(pipeline._main, "dlmscale.data"))  # pylint: disable=protected-access
