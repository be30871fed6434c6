"""Shared fixtures: the default model (converted once into the cache), a tiny random-weight Llama
with its tokenizer, and a real guardchat server (vLLM engine) on that tiny model."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from guard.artifact import ensure_artifact
from guard.config import GuardSettings
from serve.default_model import ensure_default_model
from serve.settings import default_cache_dir
from tests.support import ServerProcess, build_tiny_llama, free_port

TINY_CONTEXT = 32768  # long enough that a request outlives a disconnect


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return Path(os.environ.get("GUARDCHAT_TEST_CACHE", default_cache_dir()))


@pytest.fixture(scope="session")
def default_model_dir(cache_dir: Path) -> Path:
    return ensure_default_model(cache_dir)


@pytest.fixture(scope="session")
def guard_artifact(cache_dir: Path) -> Path:
    """The default guard artifact, trained once into the cache (as the server does on first start)."""
    return ensure_artifact(GuardSettings(), cache_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, default_model_dir: Path) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", default_model_dir)


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory, tiny_model_dir: Path, cache_dir: Path):
    """guardchat serving the tiny model without a guard: the API mechanics (the random model's
    output is noise that an output guard would judge unpredictably)."""
    log = tmp_path_factory.mktemp("logs") / "tiny_server.log"
    feedback_db = log.parent / "feedback.db"
    server = ServerProcess.guardchat(
        tiny_model_dir, free_port(), log, "--cache-dir", str(cache_dir), "--engine.kv-cache-gib", "0.125",
        "--engine.max-model-len", str(TINY_CONTEXT), "--engine.dtype", "float32", "--server.max-n", "4",
        "--no-guard.enabled", "--server.feedback-db", str(feedback_db))
    server.feedback_db = feedback_db
    with server:
        yield server


@pytest.fixture(scope="session")
def client(tiny_server):
    from openai import OpenAI

    return OpenAI(base_url=tiny_server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def model_name(tiny_model_dir: Path) -> str:
    return tiny_model_dir.name
