"""Run tracking: the results store (SQLite), per-epoch CSV metrics and logger set-up."""
