"""The LLM judge behind the classifier interface: its answer formats, and a judge model served by vLLM's own
OpenAI server deciding inside the guard pipeline (a scripted test model that answers like Llama Guard)."""
from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from guard.classifiers.judge import JudgeError, parse_llama_guard, parse_qwen3guard
from guard.config import GuardSettings, JudgeSettings
from guard.pipeline import GuardPipeline
from tests.support import ServerProcess, build_scripted_llama, free_port


def test_llama_guard_answers():
    assert parse_llama_guard("safe").unsafe == 0.0
    verdict = parse_llama_guard("unsafe\nS1,S10")
    assert verdict.unsafe == 1.0 and set(verdict.categories) == {"violent_crimes", "hate"}
    assert parse_llama_guard("unsafe\nS9", p_unsafe=0.8).categories == {"indiscriminate_weapons": 0.8}
    assert parse_llama_guard("unsafe S2").top_category() == "non_violent_crimes"  # one line, as some servers trim
    with pytest.raises(JudgeError):
        parse_llama_guard("I am a helpful assistant.")


def test_qwen3guard_answers():
    assert parse_qwen3guard("Safety: Safe\nCategories: None").unsafe == 0.0
    verdict = parse_qwen3guard("Safety: Unsafe\nCategories: Suicide & Self-Harm")
    assert verdict.unsafe == 1.0 and verdict.top_category() == "suicide_self_harm"
    assert parse_qwen3guard("Safety: Controversial\nCategories: Violent").unsafe == 0.5
    jailbreak = parse_qwen3guard("Safety: Unsafe\nCategories: Jailbreak")
    assert jailbreak.injection == 1.0 and jailbreak.unsafe == 0.0
    with pytest.raises(JudgeError):
        parse_qwen3guard("Sure! Here is a poem.")


@pytest.fixture(scope="module")
def judge_server(tmp_path_factory, default_model_dir, cache_dir):
    """vLLM's OpenAI server hosting a model that answers every conversation 'unsafe S9', as Llama Guard would
    for a weapons request (on one line: the scripted model's trigger is the newline ending its prompt)."""
    folder = tmp_path_factory.mktemp("judge")
    model = build_scripted_llama(folder / "scripted-judge", default_model_dir, "unsafe S9")
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name",
         "scripted-judge", "--dtype", "float32", "--max-model-len", "1024", "--kv-cache-memory-bytes", str(2**27),
         "--enforce-eager", "--port", str(port), "--host", "127.0.0.1", "--uvicorn-log-level", "warning"],
        port, folder / "judge.log", env={"VLLM_CACHE_ROOT": str(cache_dir / "vllm")})
    with server:
        httpx.post(server.base_url + "/v1/chat/completions", timeout=300, json={  # the first request warms it up
            "model": "scripted-judge", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        yield server


def test_a_served_judge_decides_where_the_classifiers_are_unsure(judge_server, guard_artifact):
    # a generous timeout: this is about the decision, and a busy 2-core machine can take over 10 s per judge call
    settings = GuardSettings(judge=JudgeSettings(url=judge_server.base_url + "/v1", model="scripted-judge",
                                                 band=(0.0, 1.0), timeout_s=120))
    guard = GuardPipeline.load(guard_artifact, settings)
    text = "What is the capital of France?"
    assert not GuardPipeline.load(guard_artifact, GuardSettings()).decide(text, "input").blocked
    verdict = asyncio.run(guard.check(text, "input"))  # the judge (asked for every text here) says S9
    assert verdict.blocked and verdict.category == "indiscriminate_weapons", verdict
    assert verdict.scores["indiscriminate_weapons"] > 0.9
    assert not asyncio.run(guard.check("The capital of France is Paris.", "output")).blocked  # input-only judge


def test_an_unreachable_judge_fails_closed(guard_artifact):
    settings = GuardSettings(judge=JudgeSettings(url=f"http://127.0.0.1:{free_port()}/v1", band=(0.0, 1.0),
                                                 timeout_s=2))
    verdict = asyncio.run(GuardPipeline.load(guard_artifact, settings).check("What is the capital of France?",
                                                                            "input"))
    assert verdict.blocked and verdict.reason == "guard error: JudgeError"
