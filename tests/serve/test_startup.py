"""A server whose engine cannot start says why and exits non-zero instead of hanging."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO, free_port


def test_broken_model_folder_exits_with_the_reason(tmp_path, cache_dir):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["NoSuchForCausalLM"]}))
    out = subprocess.run(
        [sys.executable, "-m", "serve.cli", "serve", "--model", str(model), "--server.port", str(free_port()),
         "--cache-dir", str(cache_dir)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 1
    assert "the engine failed to start" in out.stderr
