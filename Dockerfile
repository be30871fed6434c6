# guardchat server image. CPU by default (the same install as scripts/install.sh);
# GPU: docker build --build-arg VARIANT=gpu -t guardchat:gpu .   (then docker run --gpus all ...)
ARG VARIANT=cpu
FROM python:3.11-slim-bookworm
ARG VARIANT

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GUARDCHAT_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/guardchat \
    XDG_CACHE_HOME=/home/guardchat/.cache \
    GUARDCHAT_SERVER__HOST=0.0.0.0 \
    GUARDCHAT_SERVER__PORT=8000

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libgomp1 libnuma1 gcc g++ \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 guardchat \
    && mkdir -p /opt/venv /app && chown guardchat /opt/venv /app

USER guardchat
WORKDIR /app
COPY --chown=guardchat requirements/ requirements/
COPY --chown=guardchat scripts/ scripts/
COPY --chown=guardchat pyproject.toml README.md ./
COPY --chown=guardchat serve/ serve/
COPY --chown=guardchat guard/ guard/
COPY --chown=guardchat alignment/ alignment/
# On CPU, torch's CPU build comes from PyTorch's own index (PyPI's torch is the CUDA build).
RUN if [ "$VARIANT" = "gpu" ]; then scripts/install.sh --gpu; \
    else GUARDCHAT_TORCH="torch==2.13.0+cpu" PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
         scripts/install.sh; fi \
    # convert the default model at build time so the container starts serving at once
    && python -c "from serve.default_model import ensure_default_model; from serve.settings import default_cache_dir; ensure_default_model(default_cache_dir())"

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
ENTRYPOINT ["guardchat", "serve"]
