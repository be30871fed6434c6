"""Helpers shared by tests and benchmarks: tiny models, server processes, metric scraping."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from serve.dashboard import parse

REPO = Path(__file__).resolve().parent.parent
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def build_tiny_llama(target: Path, tokenizer_dir: Path, *, layers: int = 2, hidden: int = 128,
                     max_positions: int = 32768, seed: int = 0) -> Path:
    """A random-weight Llama with SmolLM2's tokenizer and chat template, built in seconds.
    head_dim is 64 (hidden / 2 heads): vLLM's CPU attention rejects small head sizes such as 16."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (target / "config.json").is_file():
        return target
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                         max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         tie_word_embeddings=True)
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    LlamaForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, tmp / name)
    tmp.rename(target)
    return target


def build_scripted_llama(target: Path, tokenizer_dir: Path, reply: str, *, hidden: int = 128,
                         repeat: bool = False) -> Path:
    """A 'test policy' that answers every chat prompt with `reply`, greedily, then stops (`repeat`: says it
    again and again until max_tokens, so that a request ended early shows in the tokens generated).

    Its attention and MLP outputs are zero, so the last hidden state is the current token's
    embedding; the trigger token (the end of the chat template's generation prompt) and the reply's
    tokens get orthogonal embeddings, and the untied lm_head maps each to the next token of the reply.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (target / "config.json").is_file():
        return target
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                           add_generation_prompt=True)
    trigger = tokenizer.encode(prompt, add_special_tokens=False)[-1]
    chain = [trigger, *tokenizer.encode(reply, add_special_tokens=False)]
    assert len(set(chain)) == len(chain) <= hidden, "the reply's tokens must be distinct (and few)"
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.normal_(0, 0.02)
        last = chain[1] if repeat else config.eos_token_id
        for k, (token, following) in enumerate(zip(chain, [*chain[1:], last])):
            model.model.embed_tokens.weight[token] = torch.nn.functional.one_hot(torch.tensor(k), hidden).float()
            model.lm_head.weight[following] += 100.0 * model.model.embed_tokens.weight[token]
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(tokenizer_dir / name, tmp / name)
    tmp.rename(target)
    return target


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server started as a child process (ours by default), stopped on exit."""

    def __init__(self, args: Sequence[str], port: int, log_path: Path, env: dict[str, str] | None = None,
                 ready_path: str = "/health"):
        self.args, self.port, self.log_path = list(args), port, log_path
        self.env = {**os.environ, **(env or {})}
        self.ready_path = ready_path
        self.base_url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.health_seen: list[tuple[int, str]] = []  # (status, body status) while waiting to be ready

    @classmethod
    def guardchat(cls, model: Path | None, port: int, log_path: Path, *extra: str, **kw) -> ServerProcess:
        args = [sys.executable, "-m", "serve.cli", "serve", "--server.port", str(port)]
        if model is not None:
            args += ["--model", str(model)]
        return cls(args + list(extra), port, log_path, **kw)

    def start(self, timeout: float = 300) -> ServerProcess:
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=REPO, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                r = httpx.get(self.base_url + self.ready_path, timeout=2)
                self.health_seen.append((r.status_code, r.text))
                if r.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
        finally:
            self.log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def scrape(base_url: str) -> dict[tuple[str, tuple], float]:
    """All samples of /metrics as {(name, sorted labels): value}."""
    return parse(httpx.get(base_url + "/metrics", timeout=10).text)


def metric(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())
