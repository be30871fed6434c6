"""Chat completions from prompt to reply: input check, engine generation, output gate, and the
OpenAI response (one JSON body, or server-sent events)."""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from guard.interface import Guard, OutputGate, Release, Unguarded, Verdict
from serve.engine import Engine
from serve.errors import APIError, error_payload
from serve.metrics import ServerMetrics
from serve.protocol import (AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
                            ChunkChoice, Delta, Usage, finish_reason)

log = logging.getLogger(__name__)


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")


def refusal_text(messages_text: str) -> str:
    """A short refusal in the user's language (Chinese if the request is mostly CJK)."""
    cjk = sum("\u4e00" <= ch <= "\u9fff" for ch in messages_text)
    if cjk > len(messages_text) / 4:
        return "抱歉，我不能协助处理这个请求。"
    return "Sorry, I can't help with that request."


@dataclass
class ChatRun:
    """One chat-completion request on its way through the guard and the engine."""

    engine: Engine
    guard: Guard | None
    metrics: ServerMetrics
    request: ChatCompletionRequest
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.engine.has_chat_template:
            raise APIError(400, f"model '{self.engine.model_name}' has no chat template", param="model")
        self.messages = self.request.to_messages()
        self.prompt_ids = self.engine.chat_prompt(self.messages)
        self.params = self.request.to_sampling_params(
            len(self.prompt_ids), self.engine.max_model_len, len(self.engine.tokenizer))

    async def check_input(self) -> Verdict | None:
        """Guard seam 1: the input verdict before any engine call (None when no guard is configured)."""
        return None if self.guard is None else await self.guard.check_input(self.messages)

    def output_gate(self) -> OutputGate:
        """Guard seam 2: moderation of each choice's output before the client sees it."""
        return Unguarded() if self.guard is None else self.guard.output_gate()

    def refusal(self) -> str:
        return refusal_text(" ".join(m.content for m in self.messages if m.role == "user"))

    async def complete(self) -> ChatCompletion:
        """The whole reply as one body."""
        verdict = await self.check_input()
        if verdict is not None and verdict.blocked:
            choices = [Choice(index=i, message=AssistantMessage(content=self.refusal()), finish_reason="content_filter")
                       for i in range(self.request.n)]
            return ChatCompletion(id=self.id, created=self.created, model=self.engine.model_name, choices=choices,
                                  usage=Usage.of(len(self.prompt_ids), 0))
        texts: dict[int, list[str]] = {i: [] for i in range(self.request.n)}
        reasons: dict[int, str | None] = {}
        generated = 0
        async for output in self.engine.generate(self.prompt_ids, self.params, self.id):
            for c in output.outputs:
                texts[c.index].append(c.text)
                generated += len(c.token_ids)
                if c.finish_reason:
                    reasons[c.index] = finish_reason(c.finish_reason)
        self.metrics.completion_tokens.inc(generated)
        choices = []
        for i, parts in texts.items():
            gate = self.output_gate()
            released = [await gate.push("".join(parts)), await gate.close()]
            blocked = next((r for r in released if r.blocked), None)
            text = "".join(r.text for r in released) if blocked is None else self.refusal()
            choices.append(Choice(index=i, message=AssistantMessage(content=text),
                                  finish_reason="content_filter" if blocked else reasons.get(i)))
        return ChatCompletion(id=self.id, created=self.created, model=self.engine.model_name, choices=choices,
                              usage=Usage.of(len(self.prompt_ids), generated))

    def _chunk(self, index: int, delta: Delta, reason: str | None = None) -> str:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.engine.model_name,
                                    choices=[ChunkChoice(index=index, delta=delta, finish_reason=reason)])
        return sse(chunk.model_dump_json(exclude_none=True))

    def _usage_chunk(self, generated: int) -> str:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.engine.model_name, choices=[],
                                    usage=Usage.of(len(self.prompt_ids), generated))
        return sse(chunk.model_dump_json(exclude_none=True))

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events: a role chunk per choice, content deltas as the gate releases them,
        a finish chunk per choice, usage if asked, then [DONE]. Errors after the 200 travel as an
        error event; a client that goes away cancels this generator, which aborts the engine request."""
        n = self.request.n
        for i in range(n):
            yield self._chunk(i, Delta(role="assistant", content=""))
        verdict = await self.check_input()
        if verdict is not None and verdict.blocked:
            for i in range(n):
                yield self._chunk(i, Delta(content=self.refusal()))
                yield self._chunk(i, Delta(), "content_filter")
            if self.request.include_usage:
                yield self._usage_chunk(0)
            yield SSE_DONE
            return
        gates = [self.output_gate() for _ in range(n)]
        stopped: set[int] = set()
        generated = 0
        finished = False
        try:
            async for output in self.engine.generate(self.prompt_ids, self.params, self.id):
                for c in output.outputs:
                    generated += len(c.token_ids)
                    if c.index in stopped:
                        continue
                    for event in await self._release(c.index, gates[c.index], c.text, c.finish_reason, stopped):
                        yield event
                if len(stopped) == n and not output.finished:
                    await self.engine.abort(self.id)  # every choice was stopped by the gate
                    break
            finished = True
            self.metrics.completion_tokens.inc(generated)
            if self.request.include_usage:
                yield self._usage_chunk(generated)
        except asyncio.CancelledError:
            self.metrics.client_disconnects.inc()
            raise
        except APIError as exc:
            yield sse(json.dumps(exc.payload()))
        except Exception:  # the 200 is sent: the error travels in the stream
            log.exception("generation failed for %s", self.id)
            yield sse(json.dumps(error_payload("The server had an error while generating.", "server_error")))
        finally:
            if not finished:
                await self.engine.abort(self.id)
        yield SSE_DONE

    async def _release(self, index: int, gate: OutputGate, text: str, vllm_reason: str | None,
                       stopped: set[int]) -> list[str]:
        """Events for one choice's new text: what the gate releases, and the finish chunk if it ended."""
        releases: list[Release] = [await gate.push(text)] if text else []
        if vllm_reason and not (releases and releases[-1].blocked):
            releases.append(await gate.close())
        events = [self._chunk(index, Delta(content=r.text)) for r in releases if r.text]
        if any(r.blocked for r in releases):
            stopped.add(index)
            events.append(self._chunk(index, Delta(), "content_filter"))
        elif vllm_reason:
            stopped.add(index)
            events.append(self._chunk(index, Delta(), finish_reason(vllm_reason)))
        return events
