"""Finding or building the guard artifact the server uses."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from filelock import FileLock

from guard.config import GuardSettings
from guard.datasets import OWN_DATA

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent


def fingerprint() -> str:
    """Hash of the training code and the project's own data: an artifact built from other inputs is stale."""
    files = sorted([*OWN_DATA.glob("*.jsonl"), PACKAGE / "datasets.py", PACKAGE / "train.py",
                    PACKAGE / "classifiers" / "ngram.py", PACKAGE / "classifiers" / "encoder.py",
                    PACKAGE / "classifiers" / "cascade.py", PACKAGE / "normalize.py", PACKAGE / "gloss.py",
                    PACKAGE / "hashing.py"])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ensure_artifact(settings: GuardSettings, cache_dir: Path) -> Path:
    """The configured artifact as it is, or the default one, trained (again) when missing or stale."""
    if settings.artifact is not None:
        if not (settings.artifact / "thresholds.json").is_file():
            raise FileNotFoundError(f"no guard artifact at {settings.artifact} (run `guardchat guard train --out ...`)")
        return settings.artifact
    folder = cache_dir / "guard"
    card = folder / "card.json"
    want = fingerprint()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if card.is_file() and json.loads(card.read_text()).get("fingerprint") == want:
            return folder
        from guard.train import train

        log.info("training the guard (no current artifact at %s); this takes 10-20 minutes", folder)
        train(folder, settings.data_mirror, fingerprint=want)
    return folder
