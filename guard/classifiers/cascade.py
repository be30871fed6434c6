"""The cascade: the fast n-gram stage scores every text; where it is unsure (its harm or injection
score inside a band around the decision) and the text is not Chinese, the encoder is consulted and
the two readings are averaged. Confident texts never pay for the encoder.

Only user inputs go through the cascade (one check per request). Streamed replies are checked at
every release, and consulting the encoder there doubled the guarded time to first token under load
while making the output check worse on held-out data (JADE v3 unsafe answers): replies stay with the
n-gram stage."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from guard.classifiers.base import Classifier, Direction, Scores
from guard.normalize import is_chinese

BAND = (0.08, 0.97)  # fast-stage probabilities in this range count as unsure


def average(a: Scores, b: Scores) -> Scores:
    names = {*a.categories, *b.categories}
    return Scores((a.unsafe + b.unsafe) / 2, (a.injection + b.injection) / 2,
                  {k: (a.categories.get(k, 0.0) + b.categories.get(k, 0.0)) / 2 for k in names})


@dataclass
class CascadeClassifier:
    fast: Classifier
    slow: Classifier
    band: tuple[float, float] = BAND
    directions: tuple[Direction, ...] = ("input",)
    chinese: bool = False    # consult the second stage for Chinese text too (the English MiniLM is not)
    replace: bool = False    # the second stage's reading replaces the first's (an LLM judge) instead of averaging

    @property
    def name(self) -> str:
        return f"{self.fast.name}+{self.slow.name}"

    def unsure(self, text: str, scores: Scores, direction: Direction) -> bool:
        lo, hi = self.band
        values = (scores.unsafe, scores.injection) if direction == "input" else (scores.unsafe,)
        return (self.chinese or not is_chinese(text)) and any(lo <= v <= hi for v in values)

    def score(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        out = self.fast.score(texts, direction)
        if direction not in self.directions:
            return out
        ask = [i for i, (t, s) in enumerate(zip(texts, out)) if self.unsure(t, s, direction)]
        if ask:
            for i, second in zip(ask, self.slow.score([texts[i] for i in ask], direction)):
                out[i] = second if self.replace else average(out[i], second)
        return out


def load_classifier(folder: Path, threads: int | None = None) -> Classifier:
    """The classifier an artifact folder holds: the cascade when it has encoder heads, else the n-gram stage.
    `threads` caps torch's threads for the encoder (the server leaves the other cores to the engine)."""
    from guard.classifiers.encoder import HEADS_FILE, EncoderClassifier
    from guard.classifiers.ngram import NgramClassifier

    fast = NgramClassifier.load(folder)
    if threads is not None and (folder / HEADS_FILE).is_file():
        import torch

        torch.set_num_threads(threads)
    return CascadeClassifier(fast, EncoderClassifier.load(folder)) if (folder / HEADS_FILE).is_file() else fast
