"""An LLM judge: a guard model served by vLLM (or any OpenAI-compatible server), asked through
/v1/chat/completions. The served model's own chat template builds its moderation prompt from the
conversation, as Llama Guard 3/4 and Qwen3Guard-Gen expect; this file sends the conversation and reads
the answer:

- Llama Guard: "safe", or "unsafe" and a line of codes ("S1,S10"). The unsafe score is the probability
  of "unsafe" against "safe" as the first token (the request asks for top log-probabilities), else 0/1.
- Qwen3Guard-Gen: "Safety: Safe|Controversial|Unsafe" and "Categories: ...". Unsafe scores 1,
  Controversial `controversial` (0.5: blocked only where a threshold is set that low), Safe 0.

An answer in neither shape raises `JudgeError`, so the pipeline fails closed like any classifier error.
The cascade consults the judge where the fast stage is unsure (`guard.judge` settings).
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from guard.classifiers.base import Direction, Scores
from guard.taxonomy import Category

QWEN3GUARD_CATEGORIES = {
    "Violent": Category.VIOLENT_CRIMES, "Non-violent Illegal Acts": Category.NON_VIOLENT_CRIMES,
    "Sexual Content or Sexual Acts": Category.SEXUAL_CONTENT, "PII": Category.PRIVACY,
    "Suicide & Self-Harm": Category.SELF_HARM, "Unethical Acts": Category.HATE,
    "Politically Sensitive Topics": Category.ELECTIONS, "Copyright Violation": Category.INTELLECTUAL_PROPERTY,
    "Jailbreak": Category.PROMPT_INJECTION,
}
QWEN3GUARD_SEVERITY = re.compile(r"Safety:\s*(Safe|Unsafe|Controversial)", re.I)
LLAMA_GUARD_CODES = re.compile(r"\bS(1[0-4]|[1-9])\b")
# A reply is judged as the answer to a request; the classifier interface sees the reply alone.
UNSHOWN_REQUEST = "(the request this reply answers is not shown)"


class JudgeError(RuntimeError):
    """The judge could not be asked, or answered in neither known format."""


def scores_from(categories: Sequence[Category], unsafe: float) -> Scores:
    """Scores with `unsafe` shared among the named hazard categories; a jailbreak verdict is the injection
    score."""
    injection = unsafe if Category.PROMPT_INJECTION in categories else 0.0
    hazards = [c for c in categories if c is not Category.PROMPT_INJECTION]
    harm = unsafe if hazards or not categories else 0.0
    return Scores(harm, injection, {c.value: harm / len(hazards) for c in hazards})


def parse_llama_guard(text: str, p_unsafe: float | None = None) -> Scores:
    answer = text.strip()
    head, _, rest = answer.partition("\n" if "\n" in answer else " ")  # some servers trim it to one line
    head = head.strip().lower()
    if head not in ("safe", "unsafe"):
        raise JudgeError(f"not a Llama Guard answer: {text[:80]!r}")
    unsafe = p_unsafe if p_unsafe is not None else float(head == "unsafe")
    codes = LLAMA_GUARD_CODES.findall(rest) if head == "unsafe" else []
    return scores_from([Category.from_llama_guard(c) for c in dict.fromkeys(codes)], unsafe)


def parse_qwen3guard(text: str, controversial: float = 0.5) -> Scores:
    severity = QWEN3GUARD_SEVERITY.search(text)
    if severity is None:
        raise JudgeError(f"not a Qwen3Guard answer: {text[:80]!r}")
    unsafe = {"safe": 0.0, "unsafe": 1.0, "controversial": controversial}[severity.group(1).lower()]
    named = re.search(r"Categories:\s*(.+)", text)
    categories = [c for name, c in QWEN3GUARD_CATEGORIES.items() if named and name in named.group(1)]
    return scores_from(categories if unsafe else [], unsafe)


def first_token_p_unsafe(choice: dict) -> float | None:
    """P(unsafe) / (P(unsafe) + P(safe)) from the first token's top log-probabilities, when both are there."""
    content = (choice.get("logprobs") or {}).get("content") or []
    if not content:
        return None
    probs = {"safe": 0.0, "unsafe": 0.0}
    for top in content[0].get("top_logprobs") or []:
        word = top["token"].strip().lower()
        if word in probs:
            probs[word] += math.exp(top["logprob"])
    total = probs["safe"] + probs["unsafe"]
    return probs["unsafe"] / total if total > 0 else None


@dataclass
class LLMJudge:
    """The `Classifier` interface over a served guard model."""

    url: str                                   # the server's base URL, e.g. http://127.0.0.1:8001/v1
    model: str
    format: str = "llama_guard"                # or "qwen3guard"
    api_key: str | None = None
    timeout_s: float = 10.0
    concurrency: int = 8
    controversial: float = 0.5
    extra_body: dict = field(default_factory=dict)  # passed through (e.g. vLLM sampling options)

    def __post_init__(self):
        if self.format not in ("llama_guard", "qwen3guard"):
            raise ValueError(f"judge format {self.format!r}: one of llama_guard, qwen3guard")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._http = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout_s, headers=headers)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge")

    @property
    def name(self) -> str:
        return f"judge:{self.model}"

    def messages(self, text: str, direction: Direction) -> list[dict]:
        if direction == "input":
            return [{"role": "user", "content": text}]
        return [{"role": "user", "content": UNSHOWN_REQUEST}, {"role": "assistant", "content": text}]

    def ask(self, text: str, direction: Direction) -> Scores:
        body = {"model": self.model, "messages": self.messages(text, direction), "temperature": 0.0,
                "max_tokens": 32, **self.extra_body}
        if self.format == "llama_guard":
            body.setdefault("logprobs", True)
            body.setdefault("top_logprobs", 5)
        try:
            response = self._http.post("/chat/completions", json=body)
            response.raise_for_status()
            choice = response.json()["choices"][0]
            answer = choice["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
            raise JudgeError(f"judge {self.model} at {self.url}: {exc}") from exc
        if self.format == "qwen3guard":
            return parse_qwen3guard(answer, self.controversial)
        return parse_llama_guard(answer, first_token_p_unsafe(choice))

    def score(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        return list(self._pool.map(lambda t: self.ask(t, direction), texts))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._http.close()
