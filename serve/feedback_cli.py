"""`guardchat feedback export`: the feedback store as preference pairs (TRL's JSONL) for alignment."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="guardchat feedback", description="Human feedback collected by the server.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="write preference pairs (TRL's conversational JSONL: prompt, chosen, "
                            "rejected) for `guardchat align` (recipe key data.feedback)")
    export.add_argument("--db", type=Path, help="feedback SQLite file (default: the server's, from its settings)")
    export.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    args = parser.parse_args(list(argv))
    db = args.db
    if db is None:
        from serve.app import feedback_db
        from serve.cli import load_settings
        db = feedback_db(load_settings([]))
    if not db.is_file():
        print(f"guardchat feedback: no feedback store at {db}", file=sys.stderr)
        return 2
    from serve.feedback import FeedbackStore

    store = FeedbackStore(db)
    try:
        n = store.export_pairs(args.out)
    finally:
        store.close()
    print(f"guardchat feedback: {n} preference pairs -> {args.out}")
    return 0
