"""What the server asks of a guard, in both directions: a verdict on the input before generation,
and an output gate that decides what generated text may be released to the client, while it streams.

The classifiers behind it (rules, n-gram model, encoder, LLM judge) are the guard's business; the
server only sees this interface.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol


@dataclass(frozen=True)
class Message:
    """One chat message, text only."""

    role: str
    content: str


class Action(str, Enum):
    ALLOW = "allow"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True)
class Verdict:
    """A guard decision: the action, the category that drove it, every category's score, and why."""

    action: Action
    category: str | None = None
    scores: Mapping[str, float] = field(default_factory=dict)
    reason: str = ""

    @property
    def blocked(self) -> bool:
        return self.action is Action.BLOCK


@dataclass(frozen=True)
class Release:
    """What an output gate lets through now. `text` has passed the guard and may be sent; `verdict` is
    set when the gate stopped the output after that text (nothing more is released), or redacted it."""

    text: str
    verdict: Verdict | None = None
    delay: float = 0.0  # seconds the released text was held back for checking

    @property
    def blocked(self) -> bool:
        return self.verdict is not None and self.verdict.blocked


class OutputGate(Protocol):
    """Per-choice output moderation: generated text goes in, releasable text comes out."""

    async def push(self, delta: str) -> Release: ...

    async def close(self) -> Release:
        """The generation ended: release (or stop) whatever is still held back."""
        ...


class Guard(Protocol):
    """Input check plus output gates, one guard for both directions."""

    name: str

    async def check_input(self, messages: Sequence[Message]) -> Verdict: ...

    def redact(self, text: str) -> str:
        """The text with its personal data and secrets replaced by placeholders (an input verdict to redact)."""
        ...

    def output_gate(self) -> OutputGate: ...


class Unguarded:
    """The output gate used when no guard is configured: it classifies nothing and releases every
    delta as it comes. The server reports this state on /health and at start-up."""

    async def push(self, delta: str) -> Release:
        return Release(delta)

    async def close(self) -> Release:
        return Release("")
