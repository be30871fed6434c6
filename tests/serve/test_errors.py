"""Bad input gets OpenAI error JSON naming the parameter, and the server keeps serving."""
from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import TINY_CONTEXT

USER = [{"role": "user", "content": "hi"}]

# (case, body (None: the model name is filled in), status, param, code)
CASES = [
    ("missing messages", {"model": "{model}"}, 400, "messages", "missing_required_parameter"),
    ("missing model", {"messages": USER}, 400, "model", "missing_required_parameter"),
    ("empty messages", {"model": "{model}", "messages": []}, 400, "messages", "invalid_value"),
    ("messages not a list", {"model": "{model}", "messages": "hi"}, 400, "messages", "invalid_value"),
    ("unknown role", {"model": "{model}", "messages": [{"role": "robot", "content": "hi"}]}, 400,
     "messages[0].role", "invalid_value"),
    ("missing content", {"model": "{model}", "messages": [{"role": "user"}]}, 400, "messages[0].content",
     "missing_required_parameter"),
    ("content of wrong type", {"model": "{model}", "messages": [{"role": "user", "content": 42}]}, 400,
     "messages[0].content", "invalid_value"),
    ("image content part", {"model": "{model}", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400, "messages[0].content", "invalid_value"),
    ("unknown model", {"model": "gpt-17", "messages": USER}, 404, "model", "model_not_found"),
    ("temperature not a number", {"model": "{model}", "messages": USER, "temperature": "hot"}, 400, "temperature",
     "invalid_value"),
    ("temperature too high", {"model": "{model}", "messages": USER, "temperature": 2.5}, 400, "temperature",
     "invalid_value"),
    ("temperature negative", {"model": "{model}", "messages": USER, "temperature": -0.1}, 400, "temperature",
     "invalid_value"),
    ("top_p zero", {"model": "{model}", "messages": USER, "top_p": 0}, 400, "top_p", "invalid_value"),
    ("top_p above one", {"model": "{model}", "messages": USER, "top_p": 1.5}, 400, "top_p", "invalid_value"),
    ("max_tokens zero", {"model": "{model}", "messages": USER, "max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ("max_tokens not an int", {"model": "{model}", "messages": USER, "max_tokens": "ten"}, 400, "max_tokens",
     "invalid_value"),
    ("max_tokens beyond the context", {"model": "{model}", "messages": USER, "max_tokens": TINY_CONTEXT}, 400,
     "messages", "context_length_exceeded"),
    ("presence_penalty out of range", {"model": "{model}", "messages": USER, "presence_penalty": 3}, 400,
     "presence_penalty", "invalid_value"),
    ("frequency_penalty out of range", {"model": "{model}", "messages": USER, "frequency_penalty": -3}, 400,
     "frequency_penalty", "invalid_value"),
    ("n zero", {"model": "{model}", "messages": USER, "n": 0}, 400, "n", "invalid_value"),
    ("n above the limit", {"model": "{model}", "messages": USER, "n": 5}, 400, "n", None),
    ("too many stops", {"model": "{model}", "messages": USER, "stop": ["x"] * 17}, 400, "stop", "invalid_value"),
    ("empty stop", {"model": "{model}", "messages": USER, "stop": [""]}, 400, "stop", "invalid_value"),
    ("logit_bias key not a token id", {"model": "{model}", "messages": USER, "logit_bias": {"hello": 1}}, 400,
     "logit_bias", "invalid_value"),
    ("logit_bias token beyond the vocabulary", {"model": "{model}", "messages": USER, "logit_bias": {"99999999": 1}},
     400, "logit_bias", None),
    ("tools", {"model": "{model}", "messages": USER, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "tools", None),
    ("json response format", {"model": "{model}", "messages": USER, "response_format": {"type": "json_object"}}, 400,
     "response_format.type", "invalid_value"),
    ("half an emoji (unpaired surrogate)", {"model": "{model}", "messages": [{"role": "user", "content": "joke \ud83d"}]},
     400, "messages[0].content", "invalid_value"),
    ("unpaired surrogate in a text part", {"model": "{model}", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "\udc00 hi"}]}]}, 400, "messages[0].content", "invalid_value"),
    ("unpaired surrogate in a stop", {"model": "{model}", "messages": USER, "stop": ["\ud800"]}, 400, "stop",
     "invalid_value"),
    ("stream_options without stream", {"model": "{model}", "messages": USER, "stream_options": {"include_usage": True}},
     400, "stream_options", None),
]


def fill(body, model_name):
    return {k: (model_name if v == "{model}" else v) for k, v in body.items()}


@pytest.mark.parametrize("case,body,status,param,code", CASES, ids=[c[0] for c in CASES])
def test_bad_request_names_the_parameter(tiny_server, model_name, case, body, status, param, code):
    r = httpx.post(tiny_server.base_url + "/v1/chat/completions", content=json.dumps(fill(body, model_name)),
                   headers={"content-type": "application/json"}, timeout=30)  # ASCII JSON: "\ud83d" as sent
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param
    assert error["code"] == code
    assert error["type"] == "invalid_request_error" and error["message"]


def test_prompt_longer_than_the_context(client, model_name):
    long = [{"role": "user", "content": "word " * (TINY_CONTEXT + 100)}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_name, messages=long, max_tokens=4)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert str(TINY_CONTEXT) in caught.value.body["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"just a string"'])
def test_malformed_body(tiny_server, raw):
    r = httpx.post(tiny_server.base_url + "/v1/chat/completions", content=raw,
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_openai_client_sees_typed_errors(client, model_name):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER)
    assert caught.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=model_name, messages=USER, temperature=9)
    assert caught.value.body["param"] == "temperature"


def test_unknown_route_and_wrong_method(tiny_server):
    r = httpx.get(tiny_server.base_url + "/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(tiny_server.base_url + "/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_server_keeps_serving_after_bad_input(client, tiny_server, model_name):
    for case in CASES:
        httpx.post(tiny_server.base_url + "/v1/chat/completions", content=json.dumps(fill(case[1], model_name)),
                   headers={"content-type": "application/json"}, timeout=30)
    assert httpx.get(tiny_server.base_url + "/health").status_code == 200
    assert client.chat.completions.create(model=model_name, messages=USER, max_tokens=3).choices[0].message.content
