"""The interface every guard classifier implements: texts in, scores out."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from guard.normalize import normalize

Direction = Literal["input", "output"]


@dataclass(frozen=True)
class Scores:
    """One text's scores in [0, 1]: harmful content, prompt injection, and each hazard category
    (category scores are P(category | harmful) x P(harmful))."""

    unsafe: float
    injection: float = 0.0
    categories: Mapping[str, float] = field(default_factory=dict)

    def top_category(self) -> str | None:
        return max(self.categories, key=self.categories.get) if self.categories else None

    def worst(self, other: Scores) -> Scores:
        """Element-wise maximum: the guard keeps the worst reading of a text."""
        cats = {k: max(self.categories.get(k, 0.0), other.categories.get(k, 0.0))
                for k in {*self.categories, *other.categories}}
        return Scores(max(self.unsafe, other.unsafe), max(self.injection, other.injection), cats)


class Classifier(Protocol):
    """A model that scores texts for one direction (user input or model output)."""

    name: str

    def score(self, texts: Sequence[str], direction: Direction) -> list[Scores]: ...


def score_readings(classifier: Classifier, texts: Sequence[str], direction: Direction) -> list[Scores]:
    """Scores of each text's worst reading (canonical, leetspeak-folded, decoded payloads), in one batch."""
    readings = [normalize(t).variants for t in texts]
    flat = classifier.score([r for rs in readings for r in rs], direction)
    out, i = [], 0
    for rs in readings:
        best = flat[i]
        for other in flat[i + 1:i + len(rs)]:
            best = best.worst(other)
        out.append(best)
        i += len(rs)
    return out
