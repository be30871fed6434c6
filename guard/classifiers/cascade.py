"""The cascade: the fast n-gram stage scores every text; where it is unsure (its harm or injection
score inside a band around the decision), the encoder is consulted and the two readings are combined:
harm scores as the mean of their log-odds, injection scores as the mean of their probabilities
(`combine`). Confident texts never pay for the encoder. Chinese text goes to the encoder only where it
reads Chinese (an encoder trained on the English gloss of Chinese, `EncoderClassifier.chinese`).

Only user inputs go through the cascade (one check per request). Streamed replies are checked at
every release, and consulting the encoder there doubled the guarded time to first token under load
while making the output check worse on held-out data (JADE v3 unsafe answers): replies stay with the
n-gram stage."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from guard.classifiers.base import Classifier, Direction, Scores
from guard.normalize import is_chinese

# Fast-stage probabilities in this range count as unsure: most English inputs (94% of the dev split's chat-like
# ones). With 0.08-0.97 (73%), deepset's injection F1 was 0.867 against 0.929 and 4.2% of the dev split's
# everyday prompts were blocked against 2.8% (2026-11-29, f277983's artifact, log-odds harm in both).
BAND = (0.02, 0.995)


def logit(p: float, eps: float = 1e-4) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def combine(a: Scores, b: Scores) -> Scores:
    """Two stages' readings of one text as one. Harm: the mean of the two log-odds, so that a stage that is
    sure outweighs one that is not (0.65 and 0.03 give 0.19, not 0.34). Measured against the mean of the
    probabilities on held-out sets (2026-11-29, the artifact of f277983, thresholds recalibrated): XSTest
    recall at 8% false positives 0.545 -> 0.645, JBB AUROC 0.827 -> 0.858, the dev rows' ranking unchanged.
    Injection: the mean of the probabilities; in log-odds the heads' many near-zero readings dominate, and
    deepset's F1 fell 0.92 -> 0.91. Category scores are averaged."""
    names = {*a.categories, *b.categories}
    harm = 1 / (1 + math.exp(-(logit(a.unsafe) + logit(b.unsafe)) / 2))
    return Scores(harm, (a.injection + b.injection) / 2,
                  {k: (a.categories.get(k, 0.0) + b.categories.get(k, 0.0)) / 2 for k in names})


@dataclass
class CascadeClassifier:
    fast: Classifier
    slow: Classifier
    band: tuple[float, float] = BAND
    directions: tuple[Direction, ...] = ("input",)
    chinese: bool = False    # consult the second stage for Chinese text too (where it reads Chinese)
    replace: bool = False    # the second stage's reading replaces the first's (an LLM judge) instead of combining

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
                out[i] = second if self.replace else combine(out[i], second)
        return out


def load_classifier(folder: Path, threads: int | None = None, compile: bool = False) -> Classifier:
    """The classifier an artifact folder holds: the cascade when it has encoder heads, else the n-gram stage.
    `threads` caps torch's threads for the encoder (the server leaves the other cores to the engine);
    `compile` compiles a bf16 encoder for single texts (see encoder.Embedder)."""
    from guard.classifiers.encoder import HEADS_FILE, EncoderClassifier
    from guard.classifiers.ngram import NgramClassifier

    fast = NgramClassifier.load(folder)
    if threads is not None and (folder / HEADS_FILE).is_file():
        import torch

        torch.set_num_threads(threads)
    if not (folder / HEADS_FILE).is_file():
        return fast
    slow = EncoderClassifier.load(folder, compile)
    return CascadeClassifier(fast, slow, chinese=slow.chinese)
