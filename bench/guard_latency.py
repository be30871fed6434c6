"""Guard check latency on one core: single checks of 16-256 token inputs (p50/p99, both directions,
normalization and rules included), inputs that reach the MiniLM encoder (the cascade's band widened so
that every one does; Chinese read through its English gloss), the n-gram stage alone (beside sklearn's
featurizer it replaced), the encoder alone in int8, float (bf16 where native) and compiled bf16 side by
side, and batched throughput of the classifier. Prints; asserts nothing.

    .venv/bin/python bench/guard_latency.py [--repeats 300]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from threadpoolctl import threadpool_limits  # noqa: E402

from guard import gloss  # noqa: E402
from guard.artifact import ensure_artifact  # noqa: E402
from guard.classifiers.cascade import CascadeClassifier  # noqa: E402
from guard.classifiers.encoder import Embedder  # noqa: E402
from guard.config import GuardSettings  # noqa: E402
from guard.hashing import sklearn_reference  # noqa: E402
from guard.pipeline import GuardPipeline  # noqa: E402
from serve.hardware import native_bf16  # noqa: E402
from serve.settings import default_cache_dir  # noqa: E402

EN = ("Could you explain how the water cycle works, and why clouds form at different heights depending on "
      "temperature, humidity and the air pressure of the surrounding region during the summer months? ")
ZH = "请解释一下水循环是如何运作的，以及为什么云会根据温度、湿度和周围地区的气压在不同高度形成。"


def text_of(tokens: int, base: str) -> str:
    words = (base * 20)
    return words[: tokens * 4] if base is EN else words[: int(tokens * 1.5)]


def timings(call, repeats: int) -> list[float]:
    """Milliseconds of `repeats` calls, after one untimed warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=300)
    args = ap.parse_args()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})  # one core, as in the server
    guard = GuardPipeline.load(ensure_artifact(GuardSettings(), default_cache_dir()), GuardSettings())
    if isinstance(guard.classifier, CascadeClassifier):
        guard.classifier.slow.embed.compiled.wait()  # compiled in the background: until then checks run eagerly
    print(f"{'tokens':>6} {'lang':>4} {'dir':>6} | {'p50 ms':>7} {'p99 ms':>7}")
    with threadpool_limits(1):
        for tokens in (16, 64, 128, 256):
            for lang, base in (("en", EN), ("zh", ZH)):
                text = text_of(tokens, base)
                for direction in ("input", "output"):
                    times = timings(lambda: guard.decide(text, direction), args.repeats)
                    q = statistics.quantiles(times, n=100)
                    print(f"{tokens:>6} {lang:>4} {direction:>6} | {statistics.median(times):>7.3f} {q[98]:>7.3f}")
        if isinstance(guard.classifier, CascadeClassifier):
            print("\nInputs through the encoder (the n-gram stage unsure of every text), as served; Chinese where the "
                  "encoder reads it, glossed anew each time:")
            print(f"{'tokens':>6} {'lang':>4} | {'p50 ms':>7} {'p99 ms':>7}")
            served_band, guard.classifier.band = guard.classifier.band, (0.0, 1.0)
            glosser = gloss.shared().gloss if guard.classifier.chinese else None
            for tokens in (16, 64, 128, 256):
                for lang, base in (("en", EN), ("zh", ZH)) if glosser else (("en", EN),):
                    text = text_of(tokens, base)

                    def check() -> None:
                        if glosser:
                            glosser.cache_clear()
                        guard.decide(text, "input")
                    times = timings(check, args.repeats)
                    q = statistics.quantiles(times, n=100)
                    print(f"{tokens:>6} {lang:>4} | {statistics.median(times):>7.3f} {q[98]:>7.3f}")
            guard.classifier.band = served_band
        print("\nThe n-gram stage alone (featurize + heads), one text, and sklearn's HashingVectorizer pair it replaced:")
        print(f"{'tokens':>6} {'lang':>4} | {'p50 ms':>7} {'p99 ms':>7} {'sklearn p50':>11}")
        ngram = guard.classifier.fast if isinstance(guard.classifier, CascadeClassifier) else guard.classifier
        reference = sklearn_reference(ngram.config.n_features, ngram.config.char_ngrams, ngram.config.word_ngrams)
        for tokens in (16, 64, 128, 256):
            for lang, base in (("en", EN), ("zh", ZH)):
                text = text_of(tokens, base)
                times = timings(lambda: ngram.score([text], "input"), args.repeats)
                q = statistics.quantiles(times, n=100)
                old = statistics.median(timings(lambda: reference([text]), args.repeats))
                print(f"{tokens:>6} {lang:>4} | {statistics.median(times):>7.3f} {q[98]:>7.3f} {old:>11.3f}")
        print("\nMiniLM encoder alone, one text:")
        encoders = {"int8": Embedder(int8=True), "bf16" if native_bf16() else "fp32": Embedder(int8=False)}
        if native_bf16():  # where the encoder serves: in bf16, compiled
            encoders["bf16 compiled"] = Embedder(int8=False, compile=True)
            encoders["bf16 compiled"].compiled.wait()
        print(f"{'tokens':>6} | " + " ".join(f"{name + ' ms':>17}" for name in encoders))
        for tokens in (16, 64, 128):
            text = text_of(tokens, EN)
            p50 = [statistics.median(timings(lambda: embed([text]), args.repeats)) for embed in encoders.values()]
            print(f"{tokens:>6} | " + " ".join(f"{v:>17.3f}" for v in p50))
        batch = [text_of(64, EN), text_of(64, ZH)] * 128
        start = time.perf_counter()
        guard.classifier.score(batch, "output")
        seconds = time.perf_counter() - start
    print(f"batched classifier throughput (64-token texts, batch {len(batch)}): {len(batch) / seconds:,.0f} texts/s")


if __name__ == "__main__":
    main()
