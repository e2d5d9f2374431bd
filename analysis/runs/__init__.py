"""Reading run directories into tables: one row per run, and the long-format curves."""
