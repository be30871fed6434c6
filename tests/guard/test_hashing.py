"""The n-gram stage's vectorised featurizer gives sklearn's `HashingVectorizer` matrix, bit for bit: the same
columns, counts and l2-normalised values, on Unicode of every width, edge cases of its char_wb loop, and the
project's own labelled rows."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.utils import murmurhash3_32

from guard.classifiers.ngram import NgramConfig, featurizer
from guard.datasets import OWN_DATA
from guard.hashing import murmur3, sklearn_reference

EDGES = ["", " ", "\t\n", "a", "ab", "I", "x y z", "Hello, World!", "how do I kill a Python process?",
         "如何杀死一个进程？", "a" * 100, "超长" * 50, "word " * 300, "Ǆ ǅ ǆ İstanbul ΣΑΣ", "😀 𝔘𝔫𝔦 ﬁne",
         "under_score snake_case_name x2", "tabs\tand\nnew\r\nlines  and   runs", "ＦＵＬＬ ｗｉｄｔｈ",
         "a " + "supercalifragilisticexpialidocious" * 3 + " b", "мир 世界 🌍", "\u200bzero\u200bwidth"]


def random_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    pool = "abc XYZ 123 \t\n  é ß İ ﬁ 中文字 😀 𝔘 ' - _ . !" + "".join(
        chr(c) for c in (rng.randint(32, 0x2FFFF) for _ in range(300)) if not 0xD800 <= c <= 0xDFFF)
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 300))) for _ in range(count)]


def own_texts() -> list[str]:
    return [json.loads(line)["text"] for path in sorted(OWN_DATA.glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("config", [NgramConfig(), NgramConfig(n_features=2**10, char_ngrams=(2, 5),
                                                                word_ngrams=(1, 3))], ids=["default", "other ranges"])
@pytest.mark.parametrize("texts", [EDGES, random_texts(600), own_texts()], ids=["edges", "random unicode", "own data"])
def test_features_equal_sklearns_hashing_vectorizer(config, texts):
    ours = featurizer(config)(texts)
    reference = sklearn_reference(config.n_features, config.char_ngrams, config.word_ngrams)(texts)
    reference.sort_indices()
    assert ours.shape == reference.shape and ours.dtype == reference.dtype
    np.testing.assert_array_equal(ours.indptr, reference.indptr)
    np.testing.assert_array_equal(ours.indices, reference.indices)
    np.testing.assert_array_equal(ours.data, reference.data)


def test_texts_scored_alone_or_in_a_batch_get_the_same_rows():
    texts = EDGES + random_texts(50, seed=1)
    features = featurizer(NgramConfig())
    batch = features(texts, chunk=7).toarray()
    np.testing.assert_array_equal(batch, np.vstack([features([t]).toarray() for t in texts]))


def test_murmur3_equals_sklearns_on_every_tail_length():
    data = "".join(chr(c) for c in range(0x20, 0x4E20, 37)).encode("utf-8")
    first = np.array([i for i in range(0, 64) for _ in range(17)])
    lengths = np.array([n for _ in range(64) for n in range(17)])
    expected = [murmurhash3_32(data[f:f + n], seed=0) for f, n in zip(first, lengths)]
    np.testing.assert_array_equal(murmur3(data, first, lengths), expected)
