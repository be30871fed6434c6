"""`guardchat guard train|check|eval`."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from guard.config import GuardSettings, default_mirror
from serve.settings import default_cache_dir


def default_artifact() -> Path:
    return default_cache_dir() / "guard"


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="guardchat guard", description="Train, try and evaluate the guard.")
    sub = ap.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="build the data, train, calibrate, write the artifact folder")
    train.add_argument("--out", type=Path, default=default_artifact(), help="artifact folder (default: %(default)s)")
    train.add_argument("--data-mirror", type=Path, default=default_mirror(),
                       help="folder with the public data sets (default: %(default)s)")
    train.add_argument("--target-fpr", type=float, default=None,
                       help="calibration target of the harm heads, a macro false-positive rate on dev rows "
                       "(default: TrainConfig's, 0.05)")
    train.add_argument("--injection-fpr", type=float, default=None,
                       help="calibration target of the prompt-injection head (default: TrainConfig's, 0.02)")
    train.add_argument("--per-category-thresholds", action="store_true",
                       help="also calibrate one threshold per hazard category (measured worse on held-out sets)")
    train.add_argument("--pooled-languages", action="store_true",
                       help="no input harm threshold of its own for Chinese text (one for both languages)")
    train.add_argument("--encoder-layers", type=int, default=None, choices=range(1, 7), metavar="N",
                       help="keep the first N of MiniLM's 6 layers (3: half the latency, a worse XSTest; see README)")
    train.add_argument("--no-chinese-gloss", action="store_true",
                       help="the encoder reads English only and Chinese stays with the n-gram stage: trains in ~10 "
                       "minutes instead of ~15 and checks Chinese in ~1 ms, but reads Chinese intent worse (see README)")
    train.add_argument("--seed", type=int, default=None,
                       help="the encoder's fine-tuning seed (default: FinetuneConfig's, 0); the goal lines move with it, "
                       "see README")
    check = sub.add_parser("check", help="classify texts given as arguments (or lines on stdin)")
    check.add_argument("texts", nargs="*")
    check.add_argument("--direction", choices=["input", "output"], default="input")
    check.add_argument("--context", help="with --direction output: the request the texts reply to (a reply that "
                       "does not decline a request the input check blocks is blocked)")
    check.add_argument("--artifact", type=Path, default=default_artifact())
    ev = sub.add_parser("eval", help="per-dataset metrics table and PR-curve plot of an artifact")
    ev.add_argument("--artifact", type=Path, default=default_artifact())
    ev.add_argument("--data-mirror", type=Path, default=default_mirror())
    ev.add_argument("--plot", type=Path, default=None, help="PNG path (default: <artifact>/pr_curves.png)")
    return ap


def main(args: Sequence[str]) -> int:
    """Train, check or evaluate the guard (guardchat guard --help)."""
    opts = _parser().parse_args(list(args))
    if opts.command == "train":
        from guard.artifact import fingerprint
        from guard.classifiers.encoder import FinetuneConfig
        from guard.train import TrainConfig, train

        targets = {"target_fpr": opts.target_fpr, "injection_fpr": opts.injection_fpr}
        seed = {} if opts.seed is None else {"seed": opts.seed}
        config = TrainConfig(**{k: v for k, v in targets.items() if v is not None},
                             per_category=opts.per_category_thresholds, per_language=not opts.pooled_languages,
                             encoder_chinese=not opts.no_chinese_gloss,
                             finetune=FinetuneConfig(layers=opts.encoder_layers, **seed))
        card = train(opts.out, opts.data_mirror, config, fingerprint())
        print((opts.out / "card.md").read_text())
        print(f"artifact written to {opts.out} ({card['train_seconds']} s)")
        return 0
    if not (opts.artifact / "thresholds.json").is_file():
        print(f"no guard artifact at {opts.artifact}: run `guardchat guard train` first", file=sys.stderr)
        return 2
    if opts.command == "check":
        from guard.pipeline import GuardPipeline

        # A few texts: not worth ~30 s of compiling the encoder.
        guard = GuardPipeline.load(opts.artifact, GuardSettings(compile_encoder=False))
        for text in opts.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]:
            v = guard.decide(text, opts.direction, context=opts.context)
            top = sorted(v.scores.items(), key=lambda kv: -kv[1])[:3]
            print(json.dumps({"text": text[:80], "action": v.action.value, "category": v.category,
                              "reason": v.reason, "top_scores": dict(top)}, ensure_ascii=False))
        return 0
    from guard.evaluate import evaluate

    return evaluate(opts.artifact, opts.data_mirror, opts.plot or opts.artifact / "pr_curves.png")
