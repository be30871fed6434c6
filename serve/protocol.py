"""OpenAI chat-completions schema: request models that validate themselves and turn into vLLM
sampling parameters, and the response shapes the server sends back."""
from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from guard.interface import Message
from serve.errors import APIError

UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "logprobs", "top_logprobs", "audio",
               "modalities", "prediction")


def _valid_unicode(text: str) -> str:
    """JSON can carry half of a surrogate pair ("\\ud83d", an emoji cut in two), which no tokenizer or UTF-8
    encoder takes: named here as the client's error rather than failing inside the engine or the guard."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"the text holds an unpaired surrogate ({text[exc.start]!r} at character {exc.start}); "
                         "send valid Unicode") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]  # a string the engine and the guard can read


class TextPart(BaseModel):
    """A text part of a message's content (images and audio are not supported)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: str | None = None

    def to_message(self) -> Message:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        # "developer" is OpenAI's newer name for the system role.
        return Message(role="system" if self.role == "developer" else self.role, content=text)


class StreamOptions(BaseModel):
    include_usage: bool = Field(False, description="Send a last chunk with token usage before [DONE].")


class ResponseFormat(BaseModel):
    type: Literal["text"] = Field(description="Only plain text output is supported.")


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions body (OpenAI's schema; unknown extra fields are ignored)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Name of the served model (see GET /v1/models).")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate (default: the rest of the context).")
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name for max_tokens; wins if both are set.")
    n: int = Field(1, ge=1, description="Number of choices to generate.")
    stop: Text | list[Text] | None = Field(None, description="Up to 16 strings that end generation (not included).")
    seed: int | None = Field(None, description="Makes sampling reproducible.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = Field(None, description="Token id -> bias in [-100, 100].")
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    ignore_eos: bool = Field(False, description="vLLM extension: keep generating past end-of-sequence (benchmarks).")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return stops

    @field_validator("logit_bias")
    @classmethod
    def _check_logit_bias(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for token, value in (bias or {}).items():
            if not token.lstrip("-").isdigit() or int(token) < 0:
                raise ValueError(f"keys must be token ids, got {token!r}")
            if not -100 <= value <= 100:
                raise ValueError(f"bias for token {token} must be in [-100, 100], got {value}")
        return bias

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> ChatCompletionRequest:
        for name in UNSUPPORTED:
            if (self.model_extra or {}).get(name) not in (None, False, [], {}):
                raise APIError(400, f"'{name}' is not supported by this server", param=name)
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def to_messages(self) -> list[Message]:
        return [m.to_message() for m in self.messages]

    def to_sampling_params(self, prompt_tokens: int, max_model_len: int, vocab_size: int):
        """vLLM SamplingParams for this request, after checking it fits the context window."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        room = max_model_len - prompt_tokens
        requested = self.max_completion_tokens or self.max_tokens
        if room <= 0 or (requested is not None and requested > room):
            raise APIError(
                400, f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                f"{prompt_tokens + (requested or 0)} tokens ({prompt_tokens} in the messages, {requested or 0} in "
                "the completion). Please reduce the length of the messages or completion.",
                param="messages", code="context_length_exceeded")
        bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        if any(k >= vocab_size for k in bias):
            raise APIError(400, f"logit_bias token ids must be below the vocabulary size {vocab_size}",
                           param="logit_bias")
        return SamplingParams(
            n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=requested or room,
            stop=self.stop or None, seed=self.seed, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, logit_bias=bias or None, ignore_eos=self.ignore_eos,
            output_kind=RequestOutputKind.DELTA)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                   total_tokens=prompt_tokens + completion_tokens)


FinishReason = Literal["stop", "length", "content_filter"]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class GuardInfo(BaseModel):
    """What the guard decided (guardchat extension of the OpenAI schema)."""

    action: Literal["allow", "redact", "block"]
    category: str | None = None
    reason: str = ""
    scores: dict[str, float] = Field(default_factory=dict)

    @classmethod
    def of(cls, verdict) -> GuardInfo:
        return cls(action=verdict.action.value, category=verdict.category, reason=verdict.reason,
                   scores=dict(verdict.scores))


class GuardReport(BaseModel):
    input: GuardInfo | None = None
    output: list[GuardInfo | None] = Field(default_factory=list, description="Per choice, when it was acted on.")


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    """A non-streamed reply."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    guard: GuardReport | None = Field(None, description="guardchat: the guard's decisions (absent without a guard).")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: FinishReason | None = None
    logprobs: None = None
    guard: GuardInfo | None = None  # guardchat: set on a content_filter finish


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed reply."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "guardchat"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def finish_reason(vllm_reason: str | None) -> FinishReason | None:
    """vLLM's finish reasons in OpenAI's words."""
    return {"stop": "stop", "length": "length", None: None}.get(vllm_reason, "stop")  # type: ignore[return-value]



class ModerationRequest(BaseModel):
    """POST /v1/moderations body (OpenAI's schema, text only)."""

    input: Text | list[Text] | list[TextPart] = Field(
        description="Text or texts to classify, or OpenAI's multi-modal form: a list of text parts, one input "
        "(images are not supported).")
    model: str | None = Field(None, description="Ignored: the server's guard answers.")
    direction: Literal["input", "output"] = Field(
        "input", description="guardchat extension: judge the text as a user message or as a model reply.")
    context: Text | None = Field(
        None, description="guardchat extension, with direction 'output': the user request the texts reply to. A "
        "reply that does not decline a request the input check blocks is flagged.")

    @field_validator("input", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        for i, part in enumerate(value if isinstance(value, list) else []):
            if isinstance(part, dict) and part.get("type") != "text":
                raise ValueError(f"only text can be moderated here: item {i} has type {part.get('type')!r}")
            if isinstance(part, str):  # named here: the union's errors would say "should be a valid string"
                _valid_unicode(part)
        return value

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list[str] | list[TextPart]) -> str | list[str] | list[TextPart]:
        if isinstance(value, list) and not 1 <= len(value) <= 64:
            raise ValueError("give between 1 and 64 texts")
        return value

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        if isinstance(self.input[0], TextPart):  # one input in parts, as OpenAI reads it: one result
            return ["\n".join(p.text for p in self.input)]
        return list(self.input)


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool] = Field(description="The guard's taxonomy, and OpenAI's category names mapped "
                                        "from it (guard.taxonomy.OPENAI_CATEGORIES).")
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    action: Literal["allow", "redact", "block"] = Field(description="guardchat: what the guard would do.")
    reason: str = ""


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]

    @classmethod
    def of(cls, verdicts, model: str, id: str | None = None) -> ModerationResponse:
        from guard.taxonomy import OPENAI_CATEGORIES, Category

        results = []
        for v in verdicts:
            scores = {c.value: float(v.scores.get(c.value, 0.0)) for c in Category}
            flags = {c.value: v.blocked and v.category == c.value for c in Category}
            for name, ours in OPENAI_CATEGORIES.items():
                scores[name] = max((scores[c.value] for c in ours), default=0.0)
                flags[name] = any(flags[c.value] for c in ours)
            results.append(ModerationResult(flagged=v.blocked, categories=flags, category_scores=scores,
                                            category_applied_input_types={k: ["text"] for k in scores},
                                            action=v.action.value, reason=v.reason))
        return cls(id=id or f"modr-{uuid.uuid4().hex}", model=model, results=results)


class FeedbackRequest(BaseModel):
    """POST /v1/feedback body (guardchat extension): a rating of one answer, or a preference between two."""

    model_config = {"extra": "forbid"}

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation the answer replied to.")
    model: str | None = Field(None, description="The policy that answered (default: the served model).")
    response: Text | None = Field(None, min_length=1, description="The rated answer (with `rating`).")
    rating: Literal["like", "dislike"] | None = Field(None, description="like or dislike (with `response`).")
    chosen: Text | None = Field(None, min_length=1, description="The preferred of two answers (with `rejected`).")
    rejected: Text | None = Field(None, min_length=1, description="The other answer (with `chosen`).")
    guard: dict[str, Any] | None = Field(None, description="The guard's verdicts on the answer(s), as returned.")

    @model_validator(mode="after")
    def _one_kind(self) -> FeedbackRequest:
        rating = self.response is not None or self.rating is not None
        preference = self.chosen is not None or self.rejected is not None
        if rating == preference:
            raise ValueError("give either `response` with `rating`, or `chosen` with `rejected`")
        if rating and (self.response is None or self.rating is None):
            raise ValueError("`response` and `rating` go together")
        if preference and (self.chosen is None or self.rejected is None):
            raise ValueError("`chosen` and `rejected` go together")
        if preference and self.chosen == self.rejected:
            raise ValueError("`chosen` and `rejected` are the same text")
        return self


class FeedbackResponse(BaseModel):
    id: int
    object: Literal["feedback"] = "feedback"
    kind: Literal["rating", "preference"]
