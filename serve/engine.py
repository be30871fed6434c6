"""The vLLM engine driven from this process: AsyncLLM plus the chat template of the model it serves.

Nothing here knows about HTTP or the guard: the server asks for a prompt's token ids and iterates
the engine's delta outputs.
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from guard.interface import Message
from serve.settings import EngineSettings

log = logging.getLogger(__name__)


def default_cpu_bind() -> str:
    """All cores but the last for the engine's OpenMP threads: the API process and the guard keep
    one core, which measured 25% more throughput here than letting the threads float."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "nobind"
    return ",".join(str(c) for c in cores[:-1])


def prepare_process_env(settings: EngineSettings, cache_dir: Path) -> None:
    """Environment the engine's child process inherits: core pinning and caches inside our cache dir (the
    guard's encoder compiles into the same inductor cache). Values already set by the user win."""
    env = {
        "VLLM_CPU_OMP_THREADS_BIND": settings.cpu_threads_bind or default_cpu_bind(),
        "VLLM_CACHE_ROOT": str(cache_dir / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache_dir / "inductor"),
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
    }
    if settings.cpu_threads_bind:  # an explicit setting beats an inherited variable
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = settings.cpu_threads_bind
    for key, value in env.items():
        os.environ.setdefault(key, value)
    (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TMPDIR", str(cache_dir / "tmp"))


def _build_async_llm(model: str, name: str, settings: EngineSettings):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    args = AsyncEngineArgs(
        model=model,
        served_model_name=name,
        dtype=settings.dtype,
        max_model_len=settings.max_model_len,
        kv_cache_memory_bytes=int(settings.kv_cache_gib * 2**30),
        max_num_seqs=settings.max_num_seqs,
        enforce_eager=settings.enforce_eager,
        seed=settings.seed,
        **settings.engine_args,
    )
    return AsyncLLM.from_engine_args(args)


class Engine:
    """An AsyncLLM engine and the tokenizer that turns chat messages into its prompt tokens."""

    def __init__(self, llm, model_name: str, model_path: str):
        self.llm = llm
        self.model_name = model_name
        self.model_path = model_path
        self.tokenizer = llm.get_tokenizer()
        self.max_model_len: int = llm.model_config.max_model_len

    @classmethod
    @asynccontextmanager
    async def start(cls, model: str, name: str, settings: EngineSettings, cache_dir: Path) -> AsyncIterator[Engine]:
        """Start the engine (its EngineCore runs in a child process) and shut it down on exit."""
        prepare_process_env(settings, cache_dir)
        # Importing vLLM and starting its EngineCore take tens of seconds of blocking work: done in a
        # thread so that the server keeps answering (/health says "loading") meanwhile.
        llm = await asyncio.to_thread(_build_async_llm, model, name, settings)
        try:
            yield cls(llm, name, model)
        finally:
            llm.shutdown()

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the conversation rendered by the model's chat template, ready for the reply."""
        text = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages], tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    async def generate(self, prompt_ids: list[int], params, request_id: str) -> AsyncIterator:
        """Delta outputs of one request; closing or cancelling the iteration aborts it in the engine."""
        from vllm.inputs import TokensPrompt

        async for output in self.llm.generate(TokensPrompt(prompt_token_ids=prompt_ids), params, request_id):
            yield output

    async def abort(self, request_id: str) -> None:
        await self.llm.abort(request_id)

    @property
    def healthy(self) -> bool:
        return not self.llm.errored
