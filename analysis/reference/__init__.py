"""Published reference data (tables and constants) that the analysis reproduces; see README.md here.

The files travel with the repository so a clone needs nothing beside it: tests, benches and the
README's `analysis.fit` examples read them from `DIR`.
"""
import pathlib

DIR = pathlib.Path(__file__).resolve().parent


def path(name: str) -> pathlib.Path:
  """The path of one reference file, e.g. `path("chinchilla_besiroglu.csv")`."""
  return DIR / name
