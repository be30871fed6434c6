"""A second server: /health while loading, and an API key required on the API but not on /health and /metrics."""
from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import ServerProcess, free_port


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory, tiny_model_dir, cache_dir):
    log = tmp_path_factory.mktemp("logs") / "keyed.log"
    with ServerProcess.guardchat(tiny_model_dir, free_port(), log, "--cache-dir", str(cache_dir),
                                 "--engine.kv-cache-gib", "0.0625", "--engine.max-model-len", "512", "--no-guard.enabled",
                                 env={"GUARDCHAT_SERVER__API_KEY": "s3cret"}) as server:
        yield server


def test_health_says_loading_until_the_engine_is_ready(keyed_server):
    statuses = [status for status, _ in keyed_server.health_seen]
    assert statuses[-1] == 200
    loading = [body for status, body in keyed_server.health_seen if status == 503]
    assert loading and all('"loading"' in body and '"not configured"' in body for body in loading)


def test_api_key_required(keyed_server, model_name):
    url = keyed_server.base_url
    wrong = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    reply = right.chat.completions.create(model=model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].message.content is not None
    assert httpx.get(url + "/health").status_code == 200
    assert httpx.get(url + "/metrics").status_code == 200


def test_chat_page_asks_for_the_api_key(keyed_server):
    from gradio_client import Client

    url = keyed_server.base_url + "/ui/"
    assert httpx.post(url + "gradio_api/queue/join", json={}).status_code in (401, 403)
    with pytest.raises(Exception):
        Client(url, auth=("anyone", "wrong"), verbose=False)
    client = Client(url, auth=("anyone", "s3cret"), verbose=False)
    chat = client.predict("hi", "", 0.3, 0.9, 16, False, api_name="/respond")[0]
    assert chat[-1]["role"] == "assistant"
