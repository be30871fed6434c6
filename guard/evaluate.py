"""`guardchat guard eval`: per-dataset precision, recall, F1, AUPRC and false-positive rate of a
trained guard on rows it never saw, as a table and a PR-curve plot."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from guard.classifiers.base import score_readings
from guard.classifiers.cascade import load_classifier
from guard.datasets import build_corpus
from guard.train import THRESHOLDS_FILE, blocked, card_markdown, metrics_by_source, split_counts


def evaluate(artifact: Path, mirror: Path | None, plot: Path) -> int:
    model = load_classifier(artifact)
    thresholds = json.loads((artifact / THRESHOLDS_FILE).read_text())
    corpus = build_corpus(mirror)
    metrics = {"eval": metrics_by_source(model, corpus.eval, thresholds),
               "dev": metrics_by_source(model, corpus.dev, thresholds)}
    text = card_markdown({"created": "-", "train_seconds": "-", "thresholds": thresholds, "metrics": metrics,
                          "data_mirror": str(mirror) if mirror else None, "counts": split_counts(corpus),
                          "skipped_sources": corpus.skipped})
    print(text)
    plot_pr_curves(model, corpus.eval, thresholds, plot)
    print(f"PR curves: {plot}")
    return 0


def plot_pr_curves(model, rows, thresholds, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    by_dir: dict[str, list] = defaultdict(list)
    for e in rows:
        by_dir[e.direction].append(e)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, direction in zip(axes, ("input", "output")):
        examples = by_dir[direction]
        groups: dict[str, list] = defaultdict(list)
        for e in examples:  # a source with only unsafe rows is paired with the safe rows of its sibling set
            groups[e.source.replace("_harmful", "").replace("_benign", "").split("_unsafe")[0].split("_safe")[0]].append(e)
        for name, group in sorted(groups.items()):
            y = np.array([e.unsafe for e in group])
            if y.all() or not y.any():
                continue
            texts = [e.text for e in group]
            _, ranking = blocked(texts, score_readings(model, texts, direction), direction, thresholds)
            precision, recall, _ = precision_recall_curve(y, ranking)
            ax.plot(recall, precision, label=name)
        ax.set(title=f"{direction} direction", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.suptitle("guard precision-recall on held-out sets")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
