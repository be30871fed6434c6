"""POST /v1/feedback on the real server: ratings and preferences land as rows in the SQLite file,
bad bodies get a 400, the counter moves, and the export feeds TRL's reward trainer (tiny model)."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import httpx
import pytest

from tests.support import REPO, metric, scrape

CONVERSATION = [{"role": "user", "content": "What should I cook tonight?"}]


def post(server, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/feedback", json=body, timeout=30)


def test_ratings_and_preferences_are_stored_and_exported(tiny_server, tiny_model_dir, tmp_path):
    before = metric(scrape(tiny_server.base_url), "guardchat_feedback_total", kind="rating", value="like")
    liked = post(tiny_server, {"messages": CONVERSATION, "response": "A vegetable curry.", "rating": "like"})
    disliked = post(tiny_server, {"messages": CONVERSATION, "response": "Nothing, starve.", "rating": "dislike"})
    chosen = post(tiny_server, {"messages": [{"role": "user", "content": "如何杀死一个进程？"}],
                                "chosen": "用 kill 命令加进程号。", "rejected": "抱歉，我不能帮助。",
                                "guard": {"input": {"action": "allow"}}})
    assert liked.status_code == disliked.status_code == chosen.status_code == 200, liked.text
    assert liked.json()["object"] == "feedback" and chosen.json()["kind"] == "preference"
    assert metric(scrape(tiny_server.base_url), "guardchat_feedback_total", kind="rating", value="like") == before + 1

    with sqlite3.connect(tiny_server.feedback_db) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = {r[0]: r for r in db.execute("SELECT id, kind, policy, rating, chosen, guard FROM feedback")}
    assert rows[liked.json()["id"]][1:4] == ("rating", "tiny-llama", 1)
    assert rows[chosen.json()["id"]][4] == "用 kill 命令加进程号。" and json.loads(rows[chosen.json()["id"]][5])

    out = tmp_path / "pairs.jsonl"
    done = subprocess.run([sys.executable, "-m", "serve.cli", "feedback", "export", "--db",
                           str(tiny_server.feedback_db), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    pairs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {"prompt": CONVERSATION, "chosen": [{"role": "assistant", "content": "A vegetable curry."}],
            "rejected": [{"role": "assistant", "content": "Nothing, starve."}]} in pairs
    assert any(p["chosen"][0]["content"] == "用 kill 命令加进程号。" for p in pairs)

    # The exported file is what TRL's reward trainer reads: a short run on it works.
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(output_dir=str(tmp_path / "rm"), use_cpu=True, max_steps=2, per_device_train_batch_size=2,
                        report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1)
    result = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                           processing_class=tokenizer).train()
    assert result.global_step == 2


@pytest.mark.parametrize("body,needle", [
    ({"messages": CONVERSATION, "response": "x"}, "rating"),
    ({"messages": CONVERSATION, "response": "x", "rating": "meh"}, "rating"),
    ({"messages": CONVERSATION, "chosen": "a"}, "rejected"),
    ({"messages": CONVERSATION, "chosen": "a", "rejected": "a"}, "same"),
    ({"messages": CONVERSATION, "response": "x", "rating": "like", "chosen": "a", "rejected": "b"}, "either"),
    ({"messages": [], "response": "x", "rating": "like"}, "messages"),
])
def test_bad_feedback_is_a_400_that_says_why(tiny_server, body, needle):
    reply = post(tiny_server, body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert needle in (error["message"] + str(error.get("param"))), error
