"""The results store: one SQLite row per run, read by sweeps (to skip finished runs) and the leaderboard.

WAL mode so that many worker processes can write while others read; every run is written in one
transaction (`record`), keyed by run_id, so a re-run replaces its row instead of adding a second one.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Columns of the `runs` table, in order, with their SQLite types. `result.json` holds the same keys.
COLUMNS: dict[str, str] = {
    "run_id": "TEXT PRIMARY KEY",
    "experiment": "TEXT",
    "sweep": "TEXT",
    "method": "TEXT",
    "dataset": "TEXT",
    "model": "TEXT",
    "noise_kind": "TEXT",
    "noise_rate": "REAL",
    "noise_rate_actual": "REAL",
    "seed": "INTEGER",
    "config_hash": "TEXT",
    "status": "TEXT",
    "error": "TEXT",
    "epochs": "INTEGER",
    "epochs_done": "INTEGER",
    "test_acc_last": "REAL",
    "test_acc_at_best_val": "REAL",
    "val_acc_best": "REAL",
    "best_epoch": "INTEGER",
    "train_time_s": "REAL",
    "samples_per_s": "REAL",
    "run_dir": "TEXT",
    "tags": "TEXT",
    "finished_at": "REAL",
    "extra": "TEXT",
}
STATUSES = ("completed", "failed", "interrupted")


class ResultsStore:
    """`results.sqlite` under an output root. Safe for concurrent writers (WAL + busy timeout)."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        self.path = Path(path)
        self.timeout_s = timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            self._use_wal(db)
            cols = ", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())
            db.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
            db.execute("CREATE INDEX IF NOT EXISTS runs_hash ON runs (config_hash, status)")

    def _use_wal(self, db: sqlite3.Connection) -> None:
        """Switch the file to WAL once (the mode persists in the file). The switch takes an exclusive lock for which
        SQLite may answer "locked" at once instead of waiting, when processes open a new store together: retry."""
        deadline = time.monotonic() + self.timeout_s
        while db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None)
        db.execute(f"PRAGMA busy_timeout={int(self.timeout_s * 1000)}")
        db.row_factory = sqlite3.Row
        return db

    def record(self, result: dict[str, Any]) -> None:
        """Insert or replace the row of `result['run_id']` in one transaction."""
        row = {k: result.get(k) for k in COLUMNS if k != "extra"}
        row["tags"] = json.dumps(list(result.get("tags") or []))
        row["finished_at"] = result.get("finished_at", time.time())
        row["extra"] = json.dumps({k: v for k, v in result.items() if k not in COLUMNS}, default=str)
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(f"INSERT OR REPLACE INTO runs ({names}) VALUES ({marks})", list(row.values()))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK") if db.in_transaction else None
            raise
        finally:
            db.close()

    def rows(self, where: dict[str, Any] | None = None, status: Iterable[str] | None = None) -> list[dict]:
        """All rows (as dicts, `tags` decoded), optionally filtered by equal column values and statuses."""
        clauses, args = [], []
        for key, value in (where or {}).items():
            if key not in COLUMNS:
                raise KeyError(key)
            clauses.append(f"{key} = ?")
            args.append(value)
        if status is not None:
            status = list(status)
            clauses.append(f"status IN ({', '.join('?' for _ in status)})")
            args.extend(status)
        sql = "SELECT * FROM runs" + (f" WHERE {' AND '.join(clauses)}" if clauses else "")
        db = self._connect()
        try:
            out = []
            for r in db.execute(sql + " ORDER BY finished_at", args):
                d = dict(r)
                d["tags"] = json.loads(d["tags"] or "[]")
                d.update(json.loads(d.pop("extra") or "{}"))
                out.append(d)
            return out
        finally:
            db.close()

    def completed_hashes(self) -> set[str]:
        db = self._connect()
        try:
            return {r[0] for r in db.execute("SELECT config_hash FROM runs WHERE status = 'completed'")}
        finally:
            db.close()

    def count(self) -> int:
        db = self._connect()
        try:
            return db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            db.close()
