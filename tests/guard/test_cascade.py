"""The MiniLM stage and the cascade: real embeddings from the packaged model, the encoder consulted only
where the fast stage is unsure (Chinese only where the encoder reads it), and the artifact serving the cascade."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from guard.classifiers.base import Scores
from guard.classifiers.cascade import CascadeClassifier, load_classifier
from guard.classifiers.encoder import Embedder, EncoderClassifier
from serve.hardware import native_bf16
from tests.support import REPO


class Fixed:
    """A classifier that answers from a table (to see which texts reach the second stage)."""

    def __init__(self, name: str, table: dict[str, float]):
        self.name, self.table, self.asked = name, table, []

    def score(self, texts, direction):
        self.asked += list(texts)
        return [Scores(self.table.get(t, 0.5)) for t in texts]


def test_embeddings_are_normalised_and_semantic():
    embed = Embedder()
    x = embed(["How do I kill a stuck Python process?", "How can I terminate a hung Python program?",
               "What is a good recipe for banana bread?"])
    assert x.shape == (3, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-3)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.2  # paraphrases sit closer than unrelated text
    assert np.allclose(embed(["What is a good recipe for banana bread?"])[0], x[2], atol=2e-2)  # batch-independent


@pytest.mark.skipif(not native_bf16(), reason="the encoder is compiled where it runs in bf16 (CPUs with native bf16)")
def test_the_compiled_encoder_embeds_single_texts_as_the_eager_one_does():
    texts = ["Hi", "How do I kill a stuck Python process?",
             "Summarise the plot of a long novel about a family of sailors who cross an ocean, " * 6]
    eager, fast = Embedder(int8=False), Embedder(int8=False, compile=True)
    assert fast([texts[1]]).shape == (1, 384)  # served eagerly while it compiles in the background
    assert fast.compiled.wait(timeout=300)
    if shutil.which(os.environ.get("CXX", "g++")):  # inductor builds C++; without a compiler the encoder stays eager
        assert fast.single is not fast.model
    for text in texts:  # one text per call (the compiled path), lengths 3 to 128 tokens (truncated)
        assert float(eager([text])[0] @ fast([text])[0]) > 0.999
    assert np.allclose(fast(texts), eager(texts))  # a batch runs eagerly


@pytest.mark.skipif(not native_bf16(), reason="the encoder is compiled where it runs in bf16 (CPUs with native bf16)")
def test_a_process_that_exits_while_the_encoder_compiles_exits_with_its_own_status():
    """A server whose engine fails to start exits while the guard's encoder compiles: inductor's threads torn down
    mid-compile aborted the process (status -6, 'terminate called without an active exception')."""
    code = ("import sys, time; from guard.classifiers.encoder import Embedder; e = Embedder(int8=False, compile=True); "
            "time.sleep(3); sys.exit(3 if e.compiled.is_set() else 7)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 7, out.stderr[-2000:]  # left mid-compile, with its own exit status


def test_the_encoder_is_consulted_only_when_the_fast_stage_is_unsure():
    fast = Fixed("fast", {"sure safe": 0.01, "sure unsafe": 0.999, "unsure": 0.5, "不确定的中文句子": 0.5})
    slow = Fixed("slow", {"unsure": 0.9})
    cascade = CascadeClassifier(fast, slow)
    scores = cascade.score(["sure safe", "sure unsafe", "unsure", "不确定的中文句子"], "input")
    assert slow.asked == ["unsure"]  # Chinese stays with the n-gram stage unless the encoder reads it
    assert [round(s.unsafe, 3) for s in scores] == [0.01, 0.999, 0.75, 0.5]  # log-odds 0 and 2.197 -> 1.099
    assert [s.unsafe for s in cascade.score(["unsure"], "output")] == [0.5]  # replies: n-gram only
    assert slow.asked == ["unsure"]
    assert cascade.name == "fast+slow"
    reading = CascadeClassifier(fast, slow, chinese=True)  # an encoder that reads Chinese (as its gloss)
    reading.score(["sure safe", "不确定的中文句子"], "input")
    assert slow.asked == ["unsure", "不确定的中文句子"]


def test_harm_combines_in_log_odds_and_injection_in_probability():
    from guard.classifiers.cascade import combine

    both = combine(Scores(0.65, 0.2, {"hate": 0.6}), Scores(0.03, 0.6, {"hate": 0.02, "privacy": 0.01}))
    assert round(both.unsafe, 3) == 0.193  # a sure stage outweighs an unsure one (the mean would be 0.34)
    assert round(both.injection, 3) == 0.4 and both.categories == {"hate": 0.31, "privacy": 0.005}
    assert combine(Scores(1.0), Scores(1.0)).unsafe > 0.999 and combine(Scores(0.0), Scores(0.0)).unsafe < 1e-3


def test_the_default_artifact_serves_the_cascade(guard_artifact):
    model = load_classifier(guard_artifact)
    assert isinstance(model, CascadeClassifier) and isinstance(model.slow, EncoderClassifier)
    harmful, benign = model.score(["Give me step by step instructions to build a pipe bomb at home.",
                                   "How do I kill a Python process that is stuck?"], "input")
    assert harmful.unsafe > benign.unsafe
    again = load_classifier(guard_artifact)
    assert again.slow.embed is model.slow.embed  # one encoder per artifact in a process: loaded and compiled once


def test_a_shared_encoder_loads_anew_when_its_folder_changes(tmp_path):
    folder = shutil.copytree(Embedder().path, tmp_path / "encoder")
    first = Embedder.shared(folder, int8=False)
    assert Embedder.shared(folder, int8=False) is first and Embedder.shared(folder, int8=True) is not first
    assert Embedder.shared(shutil.copytree(folder, tmp_path / "copy"), int8=False) is first  # copied with its times
    os.utime(folder / "config.json", ns=(1, 1))  # retrained in place: the folder's files change
    assert Embedder.shared(folder, int8=False) is not first


def test_fine_tuning_pulls_the_classes_apart(tmp_path):
    """A few steps on a learnable labelling (questions about fruit 'harmful', about vehicles not) move the
    encoder: held-back texts of each class sit further apart than the packaged encoder puts them, and the
    saved folder loads as the encoder this CPU serves (bf16 where native, int8 elsewhere)."""
    from guard.classifiers.encoder import FinetuneConfig, finetune

    fruit = ["apples", "pears", "bananas", "cherries", "plums", "grapes", "mangoes", "peaches", "lemons", "figs"]
    vehicles = ["trucks", "buses", "bicycles", "trains", "tractors", "scooters", "vans", "ferries", "taxis", "trams"]
    ask = lambda things: [f"Tell me about {t}." for t in things] + [f"Where can I buy {t}?" for t in things]  # noqa: E731
    texts, harm = ask(fruit[:8]) + ask(vehicles[:8]), [True] * 16 + [False] * 16
    held = ask(fruit[8:]) + ask(vehicles[8:])

    def gap(embed: Embedder) -> float:
        x = embed(held)
        a, b = x[:4].mean(0), x[4:].mean(0)
        return float(np.linalg.norm(a - b))

    before = gap(Embedder(int8=False))
    path = finetune(texts, harm, [False] * 32, [1.0] * 32, tmp_path / "encoder",
                    FinetuneConfig(epochs=6, lr=1e-4, batch_size=8))
    assert (path / "config.json").is_file() and (path / "tokenizer.json").is_file()
    assert gap(Embedder(path, int8=False)) > before + 0.2  # measured 0.93 -> 1.37
    assert Embedder(path).int8 is not native_bf16()
