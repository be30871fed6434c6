"""Chat completions against the real vLLM engine (tiny random-weight Llama) with the openai client."""
from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from openai import AsyncOpenAI

from tests.conftest import TINY_CONTEXT
from tests.support import metric, scrape

HELLO = [{"role": "user", "content": "Hello! Tell me a story."}]


def greedy(client, model_name, **kw):
    return client.chat.completions.create(model=model_name, messages=kw.pop("messages", HELLO), temperature=0, **kw)


def test_non_streamed_reply_reports_usage(client, model_name):
    reply = greedy(client, model_name, max_tokens=12)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == model_name
    assert choice.message.role == "assistant" and choice.message.content
    assert reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.usage.prompt_tokens > 10  # the chat template adds a system prompt and role markers


def test_max_tokens_ends_with_length(client, model_name):
    reply = greedy(client, model_name, max_tokens=7, extra_body={"ignore_eos": True})
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 7
    newer = greedy(client, model_name, max_completion_tokens=5, extra_body={"ignore_eos": True})
    assert newer.usage.completion_tokens == 5


def test_stream_equals_non_streamed_text(client, model_name):
    full = greedy(client, model_name, max_tokens=20).choices[0].message.content
    chunks = list(greedy(client, model_name, max_tokens=20, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes in (["length"], ["stop"])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_stream_ends_with_done_event(tiny_server, model_name):
    body = {"model": model_name, "messages": HELLO, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", tiny_server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1


def test_stop_sequence_cuts_the_text(client, model_name):
    full = greedy(client, model_name, max_tokens=40, extra_body={"ignore_eos": True}).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 3]
    assert stop.strip(), f"need a visible stop string from {full!r}"
    cut = greedy(client, model_name, max_tokens=40, stop=[stop], extra_body={"ignore_eos": True}).choices[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.message.content
    assert full.startswith(cut.message.content)
    assert len(cut.message.content) < len(full)


def test_seed_makes_sampling_reproducible(client, model_name):
    def sample(seed):
        return client.chat.completions.create(model=model_name, messages=HELLO, temperature=1.0, seed=seed,
                                              max_tokens=16, extra_body={"ignore_eos": True}).choices[0].message.content
    first, again, other = sample(1234), sample(1234), sample(99)
    assert first == again
    assert first != other


def test_penalties_and_top_p_are_accepted(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=HELLO, max_tokens=8, top_p=0.5,
                                           presence_penalty=1.5, frequency_penalty=-0.5)
    assert reply.choices[0].message.content is not None


def test_every_turn_reaches_the_prompt(client, model_name):
    def prompt_tokens(messages):
        return greedy(client, model_name, messages=messages, max_tokens=1).usage.prompt_tokens
    system = {"role": "system", "content": "You are terse."}
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]
    last = {"role": "user", "content": [{"type": "text", "text": "And now?"}]}
    full = prompt_tokens([system, *turns, last])
    assert full > prompt_tokens([system, last]) + 8  # both earlier turns are in the prompt
    longer_system = {"role": "developer", "content": "You are terse. " * 5}
    assert prompt_tokens([longer_system, *turns, last]) > full + 10  # developer = system


def test_n_choices(client, model_name):
    reply = client.chat.completions.create(model=model_name, messages=HELLO, n=3, max_tokens=6, seed=7)
    assert sorted(c.index for c in reply.choices) == [0, 1, 2]
    chunks = list(client.chat.completions.create(model=model_name, messages=HELLO, n=2, max_tokens=6, stream=True))
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}


def test_sixteen_concurrent_requests_complete(tiny_server, model_name):
    async def run():
        client = AsyncOpenAI(base_url=tiny_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
        async def one(i):
            if i % 2:
                reply = await client.chat.completions.create(model=model_name, messages=HELLO, max_tokens=32,
                                                             extra_body={"ignore_eos": True})
                return reply.usage.completion_tokens
            stream = await client.chat.completions.create(model=model_name, messages=HELLO, max_tokens=32,
                                                          stream=True, stream_options={"include_usage": True},
                                                          extra_body={"ignore_eos": True})
            return [c async for c in stream][-1].usage.completion_tokens
        try:
            return await asyncio.gather(*(one(i) for i in range(16)))
        finally:
            await client.close()
    assert asyncio.run(run()) == [32] * 16


def test_client_disconnect_aborts_the_engine_request(tiny_server, model_name):
    before = scrape(tiny_server.base_url)
    # The tiny model makes thousands of tokens a second: ask for ~10 s of them.
    max_tokens = TINY_CONTEXT - 100
    body = {"model": model_name, "messages": HELLO, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", tiny_server.base_url + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
        assert metric(scrape(tiny_server.base_url), "vllm:num_requests_running") == 1
    # the client closed the connection after 5 events: the engine must drop the request
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = scrape(tiny_server.base_url)
        if metric(after, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert metric(after, "vllm:num_requests_running") == 0
    generated = metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total")
    assert generated < max_tokens / 2  # aborted early, not run on to max_tokens
    assert metric(after, "guardchat_client_disconnects_total") >= 1


def test_models_health_and_metrics(client, tiny_server, model_name):
    assert [m.id for m in client.models.list().data] == [model_name]
    health = httpx.get(tiny_server.base_url + "/health").json()
    assert health == {"status": "ok", "model": model_name, "guard": "not configured"}
    greedy(client, model_name, max_tokens=2)
    samples = scrape(tiny_server.base_url)
    assert metric(samples, "guardchat_http_requests_total", route="/v1/chat/completions", status="200") >= 1
    assert metric(samples, "vllm:generation_tokens_total") > 0
    assert metric(samples, "guardchat_engine_ready") == 1
    assert any(name.startswith("vllm:time_to_first_token_seconds") for name, _ in samples)
