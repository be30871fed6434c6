"""Audit log of guard blocks in SQLite (WAL): time, request id, direction, category, scores, action,
and the text itself only when the settings say so."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from guard.interface import Verdict
from serve.sqlite import open_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS guard_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    request_id TEXT,
    direction TEXT NOT NULL,
    category TEXT,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    scores TEXT NOT NULL,
    text TEXT
);
CREATE INDEX IF NOT EXISTS guard_audit_ts ON guard_audit (ts);
"""


class AuditLog:
    """Append-only; safe to call from the guard's worker thread and the event loop."""

    def __init__(self, path: Path, store_text: bool):
        self.path = path
        self.store_text = store_text
        self._lock = threading.Lock()
        self._db = open_wal(path, SCHEMA)

    def record(self, request_id: str | None, direction: str, verdict: Verdict, text: str) -> None:
        row = (time.time(), request_id, direction, verdict.category, verdict.action.value, verdict.reason,
               json.dumps(dict(verdict.scores)), text if self.store_text else None)
        with self._lock:
            self._db.execute("INSERT INTO guard_audit (ts, request_id, direction, category, action, reason, scores,"
                             " text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    def close(self) -> None:
        with self._lock:
            self._db.close()
