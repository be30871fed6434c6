"""End to end with the real default model and the guard: `guardchat serve` with no --model serves
SmolLM2-135M-Instruct and lets a benign question and its answer through."""
from __future__ import annotations

import openai
import pytest

from serve.default_model import DEFAULT_MODEL_NAME
from tests.support import ServerProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_server(tmp_path_factory, default_model_dir, cache_dir, guard_artifact):
    log = tmp_path_factory.mktemp("logs") / "default.log"
    with ServerProcess.guardchat(None, free_port(), log, "--cache-dir", str(cache_dir),
                                 "--engine.kv-cache-gib", "0.25", "--engine.max-model-len", "2048") as server:
        yield server


def test_capital_of_france(default_server):
    client = openai.OpenAI(base_url=default_server.base_url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [DEFAULT_MODEL_NAME]
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=question, temperature=0, max_tokens=32)
    assert "Paris" in reply.choices[0].message.content
    streamed = client.chat.completions.create(model=DEFAULT_MODEL_NAME, messages=question, temperature=0,
                                              max_tokens=32, stream=True)
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
