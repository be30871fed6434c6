"""A guarded server whose scripted policy answers every prompt with one benign sentence: the chat UI
and the observability tests drive it (the random tiny model's noise would make the output guard's
verdicts unpredictable)."""
from __future__ import annotations

import pytest

from tests.support import ServerProcess, build_scripted_llama, free_port

BENIGN_REPLY = "Paris is the capital of France."


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory, default_model_dir, cache_dir, guard_artifact):
    model = build_scripted_llama(tmp_path_factory.mktemp("models") / "benign-policy", default_model_dir,
                                 BENIGN_REPLY)
    logs = tmp_path_factory.mktemp("ui")
    server = ServerProcess.guardchat(
        model, free_port(), logs / "ui_server.log", "--cache-dir", str(cache_dir), "--engine.kv-cache-gib", "0.0625",
        "--engine.max-model-len", "1024", "--engine.dtype", "float32", "--server.feedback-db",
        str(logs / "feedback.db"), "--guard.audit-db", str(logs / "audit.db"), "--ui.dashboard-interval-s", "0.5")
    server.feedback_db = logs / "feedback.db"
    server.model_name = model.name
    with server:
        yield server
