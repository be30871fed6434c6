"""Serving overhead: our server (FastAPI + in-process AsyncLLM) without the guard (`bare`) and with it
(`guard`) vs vLLM's own OpenAI server (`raw`), on the same model with the same engine settings and
core pinning, under the same streaming load. Prints throughput ours/raw and TTFT p50/p99 for each
pair, then sends held-out harmful requests to the guarded server and counts streamed leaks: replies
whose released text, re-checked whole by the guard's output check, would have been blocked.
Run one heavy job at a time.

    .venv/bin/python bench/serve_overhead.py [--concurrency 1 16 64] [--max-tokens 128] [--rounds 3]

Concurrency 1 is the latency row: sequential requests with short replies, where TTFT is the fixed cost
of one request's path (HTTP, template, guard, engine hand-off) without the luck of batch formation
that dominates TTFT at 16 and 64 streams (which requests make the engine's first step).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from serve.default_model import DEFAULT_MODEL_NAME, ensure_default_model  # noqa: E402
from serve.engine import default_cpu_bind  # noqa: E402
from serve.hardware import fast_dtype  # noqa: E402
from serve.settings import default_cache_dir  # noqa: E402
from tests.support import ServerProcess, free_port  # noqa: E402

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


@dataclass
class Run:
    server: str
    concurrency: int
    tokens: int
    seconds: float
    ttfts: list[float]
    prompt_tokens: int

    @property
    def throughput(self) -> float:
        return self.tokens / self.seconds

    def ttft(self, q: float) -> float:
        return quantile(self.ttfts, q)


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if len(values) > 1 else values[0]


async def sse_chunks(response: aiohttp.ClientResponse):
    """The JSON chunks of an OpenAI SSE stream, up to `data: [DONE]`."""
    async for raw in response.content:
        line = raw.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


async def one_stream(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, int, int]:
    """(time to first content token, completion tokens, prompt tokens) of one streamed request."""
    start = time.perf_counter()
    ttft, usage = None, None
    async with session.post(url, json=body) as r:
        r.raise_for_status()
        async for chunk in sse_chunks(r):
            if ttft is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                usage = chunk["usage"]
    return ttft or float("nan"), usage["completion_tokens"], usage["prompt_tokens"]


async def load(base_url: str, name: str, model: str, concurrency: int, per_worker: int, max_tokens: int) -> Run:
    body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0.8, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    url = base_url + "/v1/chat/completions"
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        await one_stream(session, url, {**body, "max_tokens": 4})  # warm the connection path

        async def worker() -> list[tuple[float, int, int]]:
            return [await one_stream(session, url, body) for _ in range(per_worker)]

        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker() for _ in range(concurrency))) for r in rs]
        seconds = time.perf_counter() - start
    return Run(name, concurrency, sum(r[1] for r in results), seconds, [r[0] for r in results], results[0][2])


def servers(model_dir: Path, logs: Path, kv_gib: float, max_len: int) -> dict[str, ServerProcess]:
    bind = default_cpu_bind()
    env = {"VLLM_CPU_OMP_THREADS_BIND": bind}
    common = ("--engine.kv-cache-gib", str(kv_gib), "--engine.max-model-len", str(max_len),
              "--server.log-level", "warning")
    ours = {name: ServerProcess.guardchat(None, free_port(), logs / f"{name}.log", *common, flag, env=env)
            for name, flag in (("guard", "--guard.enabled"), ("bare", "--no-guard.enabled"))}
    port = free_port()
    raw = ServerProcess(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
         "--served-model-name", DEFAULT_MODEL_NAME, "--dtype", fast_dtype(), "--max-model-len", str(max_len),
         "--kv-cache-memory-bytes", str(int(kv_gib * 2**30)), "--max-num-seqs", "128", "--enforce-eager",
         "--seed", "0", "--port", str(port), "--host", "127.0.0.1", "--uvicorn-log-level", "warning"],
        port, logs / "raw.log", env={**env, "VLLM_CACHE_ROOT": str(default_cache_dir() / "vllm")})
    return {**ours, "raw": raw}


async def released_text(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[str, str | None, bool]:
    """(all content the client received, finish_reason, refused at input?) of one streamed request."""
    parts, finish = [], None
    async with session.post(url, json=body) as r:
        r.raise_for_status()
        refused = r.headers.get("X-Guard-Input-Action") == "block"
        async for chunk in sse_chunks(r):
            for choice in chunk.get("choices", []):
                parts.append(choice["delta"].get("content") or "")
                finish = choice.get("finish_reason") or finish
    return "".join(parts), finish, refused


def harmful_prompts(n: int) -> list[str]:
    """Held-out harmful requests (JBB and JADE v1 are never trained on), half English, half Chinese."""
    from guard.config import default_mirror
    from guard.datasets import RECIPES

    mirror = default_mirror()
    if mirror is None:
        return []
    rows = {r.source: [e.text for e in r.examples(mirror)] for r in RECIPES if r.source in ("jbb_harmful", "jade_v1")
            and (mirror / r.path).is_file()}
    return rows.get("jbb_harmful", [])[: n // 2] + rows.get("jade_v1", [])[: n - n // 2]


async def leak_phase(base_url: str, prompts: list[str], max_tokens: int, concurrency: int = 16) -> list[tuple]:
    url = base_url + "/v1/chat/completions"
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as session:
        async def one(prompt: str):
            async with sem:
                body = {"model": DEFAULT_MODEL_NAME, "messages": [{"role": "user", "content": prompt}],
                        "max_tokens": max_tokens, "temperature": 0.7, "stream": True}
                return (prompt, *await released_text(session, url, body))
        return await asyncio.gather(*(one(p) for p in prompts))


def count_leaks(streams: list[tuple], artifact: Path) -> None:
    """Re-check every stream's released text, whole, with the guard's output check (the same artifact the
    server loaded): text the guard would block that reached the client anyway is a leak."""
    from guard.config import GuardSettings
    from guard.pipeline import GuardPipeline

    guard = GuardPipeline.load(artifact, GuardSettings())
    refused = sum(1 for *_, at_input in streams if at_input)
    cut = sum(1 for _, _, finish, at_input in streams if finish == "content_filter" and not at_input)
    def generated(text: str) -> str:  # the model's text, without the notice the server appends on a cut
        return re.sub(r"\n\n\[(?:Response stopped by the safety filter|回答已被安全过滤器中止)[^\]]*\]$", "", text)

    leaks = [(p, text) for p, text, _, at_input in streams
             if not at_input and generated(text).strip() and guard.decide(generated(text), "output").blocked]
    print(f"\nstreamed leak check: {len(streams)} harmful requests (JBB + JADE v1) to the guarded server: "
          f"{refused} refused at input, {cut} cut mid-stream, {len(streams) - refused - cut} answered; "
          f"streamed leak count {len(leaks)} (released text the output check blocks)")
    for prompt, text in leaks[:5]:
        print(f"  leak: {prompt[:60]!r} -> {text[:120]!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--per-worker", type=int, default=2, help="requests each concurrent client sends in a row")
    ap.add_argument("--rounds", type=int, default=3, help="alternating ours/raw rounds per concurrency")
    ap.add_argument("--latency-requests", type=int, default=30, help="sequential requests per round at concurrency 1")
    ap.add_argument("--latency-tokens", type=int, default=16, help="max_tokens of the concurrency-1 requests")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--leak-prompts", type=int, default=200, help="harmful prompts for the leak check (0: skip)")
    ap.add_argument("--leak-only", action="store_true", help="only the leak check (starts only the guarded server)")
    ap.add_argument("--dump", type=Path, help="write the leak check's streams here (JSONL: prompt, released text, "
                    "finish reason, refused at input) to read them")
    args = ap.parse_args()

    model_dir = ensure_default_model(default_cache_dir())
    from guard.artifact import ensure_artifact
    from guard.config import GuardSettings

    artifact = ensure_artifact(GuardSettings(), default_cache_dir())  # trained (if stale) before the servers start
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    procs = servers(model_dir, logs, args.kv_cache_gib, args.max_model_len)
    if args.leak_only:
        procs = {"guard": procs["guard"]}
        args.concurrency = []
    print(f"model {DEFAULT_MODEL_NAME} {fast_dtype()}, engine cores {default_cpu_bind()}, logs in {logs}", flush=True)
    runs: list[Run] = []
    try:
        for proc in procs.values():
            proc.start()
        for c in args.concurrency:
            for r in range(args.rounds):
                order = ["bare", "guard", "raw"] if r % 2 == 0 else ["raw", "guard", "bare"]
                for name in order:
                    per_worker, tokens = ((args.latency_requests, args.latency_tokens) if c == 1
                                          else (args.per_worker, args.max_tokens))
                    run = asyncio.run(load(procs[name].base_url, name, DEFAULT_MODEL_NAME, c, per_worker, tokens))
                    runs.append(run)
                    print(f"  c={c:3d} round {r} {name:5s}: {run.throughput:7.1f} tok/s, "
                          f"TTFT p50 {run.ttft(0.5) * 1000:6.1f} ms, prompt {run.prompt_tokens} tokens", flush=True)
        prompts = harmful_prompts(args.leak_prompts)
        streams = asyncio.run(leak_phase(procs["guard"].base_url, prompts, args.max_tokens)) if prompts else []
    finally:
        for proc in procs.values():
            proc.stop()
    if runs:
        report(runs, args)
    if streams:
        count_leaks(streams, artifact)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as f:
            for prompt, text, finish, at_input in streams:
                f.write(json.dumps({"prompt": prompt, "text": text, "finish_reason": finish, "refused_at_input": at_input},
                                   ensure_ascii=False) + "\n")


def report(runs: list[Run], args) -> None:
    print(f"\nstreaming load: {args.per_worker} requests per client x {args.max_tokens} tokens (ignore_eos); "
          f"concurrency 1: {args.latency_requests} sequential requests x {args.latency_tokens} tokens. Throughput: "
          f"median over {args.rounds} rounds; TTFT: quantiles of all rounds' requests together. "
          f"Ours without the guard (bare) and with it (guard) vs raw vLLM")
    print(f"{'conc':>4} {'ours':>5} | {'ours tok/s':>10} {'raw tok/s':>10} {'ratio':>6} | "
          f"{'TTFT p50 ours/raw ms':>21} {'overhead':>8} | {'TTFT p99 ours/raw ms':>21}")
    for c in args.concurrency:
        def med(name, f):
            return statistics.median(f(r) for r in runs if r.server == name and r.concurrency == c)
        for ours in ("bare", "guard"):
            tput = {n: med(n, lambda r: r.throughput) for n in (ours, "raw")}
            pooled = {n: [t for r in runs if r.server == n and r.concurrency == c for t in r.ttfts]
                      for n in (ours, "raw")}
            p50 = {n: quantile(ts, 0.5) * 1000 for n, ts in pooled.items()}
            p99 = {n: quantile(ts, 0.99) * 1000 for n, ts in pooled.items()}
            print(f"{c:>4} {ours:>5} | {tput[ours]:>10.1f} {tput['raw']:>10.1f} {tput[ours] / tput['raw']:>6.3f} | "
                  f"{p50[ours]:>10.1f} {p50['raw']:>10.1f} {p50[ours] - p50['raw']:>+8.1f} | "
                  f"{p99[ours]:>10.1f} {p99['raw']:>10.1f}")


if __name__ == "__main__":
    main()
