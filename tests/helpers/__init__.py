"""Shared test fixtures, imported as helpers.X (pytest puts tests/, the folder of conftest.py, on sys.path)."""
