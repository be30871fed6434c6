"""Hashed n-gram features, vectorised: the matrix sklearn's `HashingVectorizer` gives, 2-3x faster for one text.

sklearn builds every n-gram as a Python string and hashes them one by one: ~1.7 ms for a 1,000-character
text, most of the n-gram stage's time. Here every feature is a slice of one string, so the slices are
gathered as bytes in numpy and hashed all at once with MurmurHash3 (x86, 32 bit, seed 0: sklearn's hash).
Same feature indices, counts and l2 norm per analyzer, so a model trained on either scores the same
(tested against sklearn on corpora and random Unicode).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.utils import murmurhash3_32

WHITE_SPACES = re.compile(r"\s\s+")         # sklearn's char_wb whitespace folding
WORDS = re.compile(r"(?u)\b\w+\b")           # the word analyzer's token pattern
LONGEST = 16                                 # bytes hashed in numpy (every char n-gram fits); longer words one by one
C1, C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
TAIL_MASK = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF], dtype=np.uint32)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def murmur3(data: bytes, first: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MurmurHash3_x86_32, seed 0, signed, of each slice `data[first:first + length]`: equals sklearn's
    `murmurhash3_32(slice, seed=0)` slice by slice. Slices are taken shortest first, so block j is mixed
    into only the slices that have one."""
    d = np.frombuffer(data + bytes(3), dtype=np.uint8).astype(np.uint32)
    word_at = d[:-3] | d[1:-2] << 8 | d[2:-1] << 16 | d[3:] << 24                # (bytes,) LE word at each offset
    order = np.argsort(lengths, kind="stable")
    first, lengths = first[order], lengths[order]
    full = lengths // 4
    h = np.zeros(len(lengths), dtype=np.uint32)
    with np.errstate(over="ignore"):
        for j in range(int(full[-1]) if len(full) else 0):
            at = np.searchsorted(full, j, side="right")                          # slices with a block j
            k = _rotl(word_at[first[at:] + 4 * j] * C1, 15) * C2
            h[at:] = _rotl(h[at:] ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        rest = np.flatnonzero(lengths % 4)                                       # a 1-3 byte tail: no rotate, no add
        k = word_at[first[rest] + 4 * full[rest]] & TAIL_MASK[lengths[rest] % 4]
        h[rest] ^= _rotl(k * C1, 15) * C2
        h ^= lengths.astype(np.uint32)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    hashes = np.empty_like(h)
    hashes[order] = h
    return hashes.view(np.int32)


def hash_slices(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Signed MurmurHash3 of the UTF-8 bytes of each slice `text[start:end]` (code point offsets)."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    width = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)  # UTF-8 bytes per code point
    offset = np.concatenate([[0], np.cumsum(width)])                         # byte offset of each code point
    data = text.encode("utf-8")
    first, lengths = offset[starts], offset[ends] - offset[starts]
    hashes = np.empty(len(starts), dtype=np.int32)
    short = lengths <= LONGEST
    hashes[short] = murmur3(data, first[short], lengths[short])
    for i in np.flatnonzero(~short):                                         # long words: one by one
        hashes[i] = murmurhash3_32(text[starts[i]:ends[i]], seed=0)
    return hashes


Slices = tuple[str, np.ndarray, np.ndarray, np.ndarray]  # joined string; start, end, text row of each n-gram


def _units(texts: Sequence[str], split) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every text's words (or tokens) in one list, their lengths and the row of the text each came from."""
    parts = [split(text) for text in texts]
    units = [unit for part in parts for unit in part]
    row = np.repeat(np.arange(len(texts)), [len(part) for part in parts])
    return units, np.fromiter(map(len, units), dtype=np.int64, count=len(units)), row


def char_wb_slices(texts: Sequence[str], ngrams: tuple[int, int]) -> Slices:
    """sklearn's `char_wb` n-grams as slices of one string: each word padded with a space on both sides, its
    n-grams for each n in range that fits it, and a word shorter than the smallest n once whole (as sklearn's
    loop does: `for w in words: for n in range: all windows of w; break once n >= len(w)`)."""
    words, length, word_row = _units(texts, lambda text: WHITE_SPACES.sub(" ", text).split())
    padded = length + 2
    word_end = np.cumsum(padded)
    word_start = word_end - padded
    end_of = np.repeat(word_end, padded)                                     # each position's word end
    row_of = np.repeat(word_row, padded)
    position = np.arange(len(end_of))
    lo, hi = ngrams
    fits = [position + n <= end_of for n in range(lo, hi + 1)]
    whole = padded < lo                                                      # short words, once whole
    starts = np.concatenate([position[f] for f in fits] + [word_start[whole]])
    lengths = np.concatenate([np.full(f.sum(), n) for n, f in zip(range(lo, hi + 1), fits)] + [padded[whole]])
    rows = np.concatenate([row_of[f] for f in fits] + [word_row[whole]])
    return " " + "  ".join(words) + " " if words else "", starts, starts + lengths, rows


def word_slices(texts: Sequence[str], ngrams: tuple[int, int]) -> Slices:
    """sklearn's word n-grams (tokens joined by one space) as slices of the tokens joined by one space; an
    n-gram never spans two texts."""
    tokens, length, row = _units(texts, WORDS.findall)
    start = np.cumsum(length + 1) - length - 1
    end = start + length
    starts, ends, rows = [], [], []
    for n in range(ngrams[0], ngrams[1] + 1):
        first = row[: max(len(tokens) - n + 1, 0)]                          # the row of each n-gram's first token
        same = first == row[n - 1:]                                          # ... and of its last: one text
        starts.append(start[: len(first)][same])
        ends.append(end[n - 1:][same])
        rows.append(first[same])
    return " ".join(tokens), np.concatenate(starts), np.concatenate(ends), np.concatenate(rows)


def sklearn_reference(n_features: int, char_ngrams: tuple[int, int], word_ngrams: tuple[int, int]):
    """What `HashedNgrams` equals, built string by string: sklearn's two hashing vectorizers side by side (the
    n-gram stage's featurizer before this module; tests and the latency benchmark compare against it)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    common = dict(n_features=n_features, alternate_sign=False, lowercase=True, norm="l2", dtype=np.float32)
    chars = HashingVectorizer(analyzer="char_wb", ngram_range=char_ngrams, **common)
    words = HashingVectorizer(analyzer="word", ngram_range=word_ngrams, token_pattern=WORDS.pattern, **common)
    return lambda texts: sp.hstack([chars.transform(texts), words.transform(texts)], format="csr")


class HashedNgrams:
    """Lowercased character (`char_wb`) and word n-gram counts hashed into `n_features` columns each, every
    analyzer's part l2-normalised: (N, 2 * n_features) float32 CSR, equal to sklearn's two
    `HashingVectorizer(alternate_sign=False, norm="l2", lowercase=True)` outputs side by side."""

    def __init__(self, n_features: int, char_ngrams: tuple[int, int], word_ngrams: tuple[int, int]):
        self.n_features = n_features
        self.analyzers = ((char_wb_slices, char_ngrams), (word_slices, word_ngrams))

    def __call__(self, texts: Sequence[str], chunk: int = 2048) -> sp.csr_matrix:
        if len(texts) > chunk:
            return sp.vstack([self(texts[i:i + chunk]) for i in range(0, len(texts), chunk)], format="csr")
        lowered = [text.lower() for text in texts]
        (chars, c_starts, c_ends, c_rows), (words, w_starts, w_ends, w_rows) = (
            slices(lowered, ngrams) for slices, ngrams in self.analyzers)
        h = hash_slices(chars + words, np.concatenate([c_starts, w_starts + len(chars)]),
                        np.concatenate([c_ends, w_ends + len(chars)])).astype(np.int64)
        column = np.where(h == -2**31, (2**31 - 1 - (self.n_features - 1)) % self.n_features,
                          np.abs(h) % self.n_features)
        block = np.concatenate([c_rows * 2, w_rows * 2 + 1])                 # row * 2 + analyzer
        key, count = np.unique(block * self.n_features + column, return_counts=True)
        block = key // self.n_features                                        # row * 2 + analyzer
        norms = np.sqrt(np.bincount(block, weights=count.astype(np.float64) ** 2, minlength=2 * len(texts)))
        values = (count / norms[block]).astype(np.float32)                    # in float64, as sklearn's normalize
        rows, part = np.divmod(block, 2)
        columns = part * self.n_features + key % self.n_features
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(texts)))])
        return sp.csr_matrix((values, columns.astype(np.int32), indptr.astype(np.int32)),
                             shape=(len(texts), 2 * self.n_features))
