"""Chat completions from prompt to reply: input check, engine generation, output gate, and the
OpenAI response (one JSON body, or server-sent events)."""
from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from guard.interface import Action, Guard, OutputGate, Release, Unguarded, Verdict
from guard.normalize import is_chinese
from guard.taxonomy import Category, category_label
from serve.engine import Engine
from serve.errors import APIError, error_payload
from serve.metrics import ServerMetrics
from serve.protocol import (AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, Choice,
                            ChunkChoice, Delta, GuardInfo, GuardReport, Usage, finish_reason)

log = logging.getLogger(__name__)
# The request a guard decision belongs to (read by the audit log).
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


SSE_DONE = sse("[DONE]")


# A blocked self-harm request may come from someone in crisis: the reply points to help instead of only declining.
SELF_HARM_REPLY = {
    "en": "It sounds like you may be going through something really painful, and I can't help with that request "
          "(safety category: suicide and self-harm). You don't have to face this alone: if you are in danger, call "
          "your local emergency number. In the US you can call or text 988 (Suicide & Crisis Lifeline); in the UK and "
          "Ireland call Samaritans on 116 123; elsewhere findahelpline.com lists free, confidential lines. I'm "
          "here to talk about how you're feeling, too.",
    "zh": "听起来你可能正在经历很痛苦的事情，这个请求我不能协助（安全类别：自杀与自残）。你不必独自面对：如果你有危险，"
          "请立即拨打 120 或 110；你也可以拨打全国统一心理援助热线 12356，或在 findahelpline.com 找到你所在地区的免费、"
          "保密热线。如果你愿意，也可以和我聊聊你现在的感受。",
}


def refusal_text(user_text: str, category: str | None) -> str:
    """A short refusal in the user's language that names the concern (for self-harm, one that points to help)."""
    if category == Category.SELF_HARM.value:
        return SELF_HARM_REPLY["zh" if is_chinese(user_text) else "en"]
    topic = category_label(category, is_chinese(user_text))
    if is_chinese(user_text):
        return f"抱歉，我不能协助处理这个请求（安全类别：{topic}）。如果你有其他问题，我很乐意帮忙。"
    return f"Sorry, I can't help with that request (safety category: {topic}). I'm happy to help with something else."


def cut_notice(user_text: str, category: str | None) -> str:
    """Appended when the output guard stops a reply that had already begun."""
    topic = category_label(category, is_chinese(user_text))
    if is_chinese(user_text):
        return f"\n\n[回答已被安全过滤器中止：{topic}]"
    return f"\n\n[Response stopped by the safety filter: {topic}]"


@dataclass
class ChatRun:
    """One chat-completion request on its way through the guard and the engine."""

    engine: Engine
    guard: Guard | None
    metrics: ServerMetrics
    request: ChatCompletionRequest
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    created: int = field(default_factory=lambda: int(time.time()))
    input_verdict: Verdict | None = None
    notices: bool = True  # refusal and cut-notice texts in the reply (off for the chat UI, which shows its own)

    def __post_init__(self) -> None:
        if not self.engine.has_chat_template:
            raise APIError(400, f"model '{self.engine.model_name}' has no chat template", param="model")
        self.messages = self.request.to_messages()
        self._prompt()
        self.user_text = next((m.content for m in reversed(self.messages) if m.role == "user"), "")

    def _prompt(self) -> None:
        self.prompt_ids = self.engine.chat_prompt(self.messages)
        self.params = self.request.to_sampling_params(
            len(self.prompt_ids), self.engine.max_model_len, len(self.engine.tokenizer))

    async def check_input(self) -> Verdict | None:
        """Guard seam 1: the input verdict before any engine call (None when no guard is configured)."""
        current_request_id.set(self.id)
        if self.guard is not None:
            self.input_verdict = await self.guard.check_input(self.messages)
            if self.input_verdict.action is Action.REDACT:  # guard.input_pii = "redact": the model never sees it
                self.messages = [replace(m, content=self.guard.redact(m.content)) if m.role == "user" else m
                                 for m in self.messages]
                self._prompt()
        return self.input_verdict

    @property
    def refused(self) -> bool:
        return self.input_verdict is not None and self.input_verdict.blocked

    def output_gate(self) -> OutputGate:
        """Guard seam 2: moderation of each choice's output before the client sees it."""
        return Unguarded() if self.guard is None else self.guard.output_gate()

    def _report(self, output: list[Verdict | None]) -> GuardReport | None:
        if self.guard is None:
            return None
        return GuardReport(input=GuardInfo.of(self.input_verdict) if self.input_verdict else None,
                           output=[GuardInfo.of(v) if v else None for v in output])

    async def complete(self) -> ChatCompletion:
        """The whole reply as one body."""
        n = self.request.n
        if self.refused:
            refusal = refusal_text(self.user_text, self.input_verdict.category)
            choices = [Choice(index=i, message=AssistantMessage(content=refusal), finish_reason="content_filter")
                       for i in range(n)]
            return ChatCompletion(id=self.id, created=self.created, model=self.engine.model_name, choices=choices,
                                  usage=Usage.of(len(self.prompt_ids), 0), guard=self._report([None] * n))
        texts: dict[int, list[str]] = {i: [] for i in range(n)}
        reasons: dict[int, str | None] = {}
        generated = 0
        async for output in self.engine.generate(self.prompt_ids, self.params, self.id):
            for c in output.outputs:
                texts[c.index].append(c.text)
                generated += len(c.token_ids)
                if c.finish_reason:
                    reasons[c.index] = finish_reason(c.finish_reason)
        self.metrics.completion_tokens.inc(generated)
        choices, verdicts = [], []
        for i, parts in texts.items():
            gate = self.output_gate()
            released = [await gate.push("".join(parts)), await gate.close()]
            stop = next((r.verdict for r in released if r.blocked), None)
            text = "".join(r.text for r in released)
            if stop is not None:
                text = refusal_text(self.user_text, stop.category)
            acted = stop or next((r.verdict for r in released if r.verdict), None)
            verdicts.append(acted)
            choices.append(Choice(index=i, message=AssistantMessage(content=text),
                                  finish_reason="content_filter" if stop else reasons.get(i)))
        return ChatCompletion(id=self.id, created=self.created, model=self.engine.model_name, choices=choices,
                              usage=Usage.of(len(self.prompt_ids), generated), guard=self._report(verdicts))

    def _chunk(self, index: int, delta: Delta, reason: str | None = None,
               guard: GuardInfo | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.engine.model_name,
                                   choices=[ChunkChoice(index=index, delta=delta, finish_reason=reason, guard=guard)])

    def _usage_chunk(self, generated: int) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.engine.model_name, choices=[],
                                   usage=Usage.of(len(self.prompt_ids), generated))

    async def stream(self) -> AsyncIterator[str]:
        """Server-sent events over `chunks()`, then [DONE]. Errors after the 200 travel as an error event."""
        try:
            async with contextlib.aclosing(self.chunks()) as chunks:
                async for chunk in chunks:
                    yield sse(chunk.model_dump_json(exclude_none=True))
        except asyncio.CancelledError:
            self.metrics.client_disconnects.inc()
            raise
        except APIError as exc:
            yield sse(json.dumps(exc.payload()))
        except Exception:  # the 200 is sent: the error travels in the stream
            log.exception("generation failed for %s", self.id)
            yield sse(json.dumps(error_payload("The server had an error while generating.", "server_error")))
        yield SSE_DONE

    async def chunks(self) -> AsyncIterator[ChatCompletionChunk]:
        """The streamed reply: a role chunk per choice (with its first output), content deltas as the gate
        releases them, a finish chunk per choice, and usage if asked. With `notices` off, the refusal and
        cut-notice texts are left out (the chat UI renders its own from the finish chunk's guard info).
        Closing or cancelling this generator early aborts the engine request."""
        n = self.request.n
        if self.refused:
            for i in range(n):
                yield self._chunk(i, Delta(role="assistant", content=""))
                if self.notices:
                    yield self._chunk(i, Delta(content=refusal_text(self.user_text, self.input_verdict.category)))
                yield self._chunk(i, Delta(), "content_filter", GuardInfo.of(self.input_verdict))
            if self.request.include_usage:
                yield self._usage_chunk(0)
            return
        gates = [self.output_gate() for _ in range(n)]
        self._opened: set[int] = set()  # choices whose role chunk went out (with their first event, as vLLM
        # does: the engine request starts at once instead of after a first network write)
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
        finally:
            if not finished:
                await self.engine.abort(self.id)

    async def _release(self, index: int, gate: OutputGate, text: str, vllm_reason: str | None,
                       stopped: set[int]) -> list[ChatCompletionChunk]:
        """Events for one choice's new text: what the gate releases, and the finish chunk if it ended."""
        releases: list[Release] = [await gate.push(text)] if text else []
        if vllm_reason and not (releases and releases[-1].blocked):
            releases.append(await gate.close())
        events = [] if index in self._opened else [self._chunk(index, Delta(role="assistant", content=""))]
        self._opened.add(index)
        for r in releases:
            if r.text:
                events.append(self._chunk(index, Delta(content=r.text)))
                if self.guard is not None:
                    self.metrics.holdback.observe(r.delay)
        stop = next((r.verdict for r in releases if r.blocked), None)
        if stop is not None:
            stopped.add(index)
            self.metrics.stream_blocks.inc()
            if self.notices:
                events.append(self._chunk(index, Delta(content=cut_notice(self.user_text, stop.category))))
            events.append(self._chunk(index, Delta(), "content_filter", GuardInfo.of(stop)))
        elif vllm_reason:
            stopped.add(index)
            events.append(self._chunk(index, Delta(), finish_reason(vllm_reason)))
        return events
