"""The fast stage: logistic regression on hashed character n-grams (plus word n-grams).

Character n-grams need no tokenizer and work the same for Chinese and English; hashing keeps the
model a fixed size with no vocabulary to build. Scoring one text takes well under a millisecond.
Heads: input harm, input prompt injection, output harm, and a hazard category head shared by both.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDClassifier

from guard.classifiers.base import Direction, Scores

MODEL_FILE = "ngram.joblib"


@dataclass(frozen=True)
class NgramConfig:
    n_features: int = 2**20        # hashed feature space per analyzer
    char_ngrams: tuple[int, int] = (1, 4)
    word_ngrams: tuple[int, int] = (1, 2)
    alpha: float = 2e-6            # L2 strength of the logistic regression (SGD)
    epochs: int = 15
    seed: int = 0


class Featurizer:
    def __init__(self, config: NgramConfig):
        common = dict(n_features=config.n_features, alternate_sign=False, lowercase=True, norm="l2")
        self.chars = HashingVectorizer(analyzer="char_wb", ngram_range=config.char_ngrams, **common)
        self.words = HashingVectorizer(analyzer="word", ngram_range=config.word_ngrams,
                                       token_pattern=r"(?u)\b\w+\b", **common)

    def __call__(self, texts: Sequence[str]) -> sp.csr_matrix:
        return sp.hstack([self.chars.transform(texts), self.words.transform(texts)], format="csr")


def _fit_head(x: sp.csr_matrix, y: np.ndarray, weights: np.ndarray, config: NgramConfig) -> SGDClassifier:
    head = SGDClassifier(loss="log_loss", alpha=config.alpha, max_iter=config.epochs, tol=None,
                         class_weight="balanced", random_state=config.seed)
    return head.fit(x, y, sample_weight=weights)


class NgramClassifier:
    """Hashed n-gram logistic regression heads."""

    name = "ngram"

    def __init__(self, config: NgramConfig, heads: dict[str, SGDClassifier]):
        self.config = config
        self.featurize = Featurizer(config)
        self.heads = heads

    @classmethod
    def fit(cls, texts: Sequence[str], directions: Sequence[str], unsafe: Sequence[bool],
            categories: Sequence[str | None], weights: Sequence[float], config: NgramConfig,
            injection_category: str = "prompt_injection") -> NgramClassifier:
        """Train every head on its slice of the rows (one shared feature matrix)."""
        x = Featurizer(config)(texts)
        d = np.array(directions)
        u = np.array(unsafe, dtype=bool)
        c = np.array([cat or "" for cat in categories])
        w = np.asarray(weights, dtype=float)
        injection = c == injection_category
        heads = {}
        rows = (d == "input") & ~injection  # jailbreak wrappers are judged by their own head
        heads["input"] = _fit_head(x[rows], u[rows], w[rows], config)
        rows = d == "input"
        heads["injection"] = _fit_head(x[rows], injection[rows], w[rows], config)
        rows = d == "output"
        heads["output"] = _fit_head(x[rows], u[rows], w[rows], config)
        rows = u & (c != "") & ~injection
        heads["category"] = _fit_head(x[rows], c[rows], w[rows], config)
        return cls(config, heads)

    def score(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        x = self.featurize(texts)
        harm = self.heads[direction].predict_proba(x)[:, 1]
        inject = self.heads["injection"].predict_proba(x)[:, 1] if direction == "input" else np.zeros(len(texts))
        category_head = self.heads["category"]
        cats = category_head.predict_proba(x)  # (N, K)
        names = [str(k) for k in category_head.classes_]
        return [Scores(float(h), float(i), dict(zip(names, (p * h).round(4).tolist())))
                for h, i, p in zip(harm, inject, cats)]

    def save(self, folder: Path) -> None:
        joblib.dump({"config": self.config, "heads": self.heads}, folder / MODEL_FILE, compress=3)

    @classmethod
    def load(cls, folder: Path) -> NgramClassifier:
        state = joblib.load(folder / MODEL_FILE)
        return cls(state["config"], state["heads"])
