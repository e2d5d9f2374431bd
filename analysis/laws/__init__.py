"""The scaling-law fits and their machinery (multi-start L-BFGS, bootstrap, identifiability, frontiers)."""
