"""Human feedback in SQLite (WAL): likes/dislikes on answers and pairwise preferences ("two answers"),
each with the conversation, the policy that answered and the guard's verdicts. `export_pairs` turns
them into the preference JSONL that TRL's reward and DPO trainers read (and `guardchat align` takes
as `data.feedback`): every preference, plus liked vs disliked answers to the same conversation."""
from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path

from serve.sqlite import open_wal

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('rating', 'preference')),
    policy TEXT,
    messages TEXT NOT NULL,
    response TEXT,
    rating INTEGER CHECK (rating IN (-1, 1)),
    chosen TEXT,
    rejected TEXT,
    guard TEXT,
    source TEXT
);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts);
"""


class FeedbackStore:
    """Safe to share between the event loop and worker threads; every write is its own transaction."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._db = open_wal(path, SCHEMA)

    def _insert(self, **row) -> int:
        row = {"ts": time.time(), **row}
        names = ", ".join(row)
        with self._lock:
            cur = self._db.execute(f"INSERT INTO feedback ({names}) VALUES ({', '.join('?' * len(row))})",
                                   tuple(row.values()))
            return int(cur.lastrowid)

    def add_rating(self, messages: list[dict], response: str, rating: int, policy: str | None = None,
                   guard: dict | None = None, source: str = "api") -> int:
        return self._insert(kind="rating", policy=policy, messages=json.dumps(messages, ensure_ascii=False),
                            response=response, rating=rating, guard=json.dumps(guard) if guard else None,
                            source=source)

    def add_preference(self, messages: list[dict], chosen: str, rejected: str, policy: str | None = None,
                       guard: dict | None = None, source: str = "api") -> int:
        return self._insert(kind="preference", policy=policy, messages=json.dumps(messages, ensure_ascii=False),
                            chosen=chosen, rejected=rejected, guard=json.dumps(guard) if guard else None,
                            source=source)

    def rows(self) -> list[dict]:
        with self._lock:
            cur = self._db.execute("SELECT * FROM feedback ORDER BY id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def export_pairs(self, out: Path) -> int:
        """Preference pairs in TRL's conversational format, one JSON object per line."""
        pairs: list[tuple[list[dict], str, str]] = []
        rated: dict[str, dict[int, list[str]]] = defaultdict(lambda: {1: [], -1: []})
        for row in self.rows():
            messages = json.loads(row["messages"])
            if row["kind"] == "preference":
                pairs.append((messages, row["chosen"], row["rejected"]))
            elif row["response"] not in rated[row["messages"]][row["rating"]]:
                rated[row["messages"]][row["rating"]].append(row["response"])
        for key, by in rated.items():
            pairs += [(json.loads(key), good, bad) for good in by[1] for bad in by[-1] if good != bad]
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for messages, chosen, rejected in pairs:
                f.write(json.dumps({"prompt": messages, "chosen": [{"role": "assistant", "content": chosen}],
                                    "rejected": [{"role": "assistant", "content": rejected}]},
                                   ensure_ascii=False) + "\n")
        return len(pairs)

    def close(self) -> None:
        with self._lock:
            self._db.close()
