# MERLION Studio: the app with a ready demo (maze and multi-step maze datasets, MERLION encoders,
# short MERLION-CQL runs), built at image build time. Build, run, GPU, volumes and a public
# deployment: docs/deploy.md.
#
#   docker build -t merlion-studio .
#   docker run -d -p 8501:8501 -v merlion-runs:/app/runs -v merlion-data:/app/data merlion-studio
#
# Build arguments (all optional):
#   BASE_IMAGE       python:3.11-slim (CPU). A CUDA base, e.g. nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04,
#                    goes with a CUDA torch: TORCH_VERSION=2.13.0 and TORCH_INDEX_URL=<its cuXYZ index>.
#   TORCH_VERSION    2.13.0+cpu (requirements.txt pins torch==2.13.0; "+cpu" matches only CPU wheels, so
#                    a build never pulls the 5 GB CUDA build by accident: it fails instead).
#   TORCH_INDEX_URL  https://download.pytorch.org/whl/cpu; empty: PyPI and local wheels only.
#   DEMO_ENVS        maze,multistep-maze; empty: no demo in the image (the app can build it on first start).
# Local wheels (offline builds, and CI where download.pytorch.org is unreachable):
#   --build-context wheels=DIR   (pip --find-links DIR; docker buildx and podman >= 4.3)

ARG BASE_IMAGE=python:3.11-slim

# Empty unless --build-context wheels=DIR replaces it.
FROM scratch AS wheels

FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python >= 3.11 with venv (python:3.11-slim has it; a CUDA base gets its distribution's python3)
# and the unprivileged user the app runs as.
RUN if ! python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv \
    && useradd --create-home --user-group --uid 10001 --shell /usr/sbin/nologin merlion \
    && mkdir -p /app/runs /app/data \
    && chown merlion:merlion /app/runs /app/data

# torch alone first (the largest layer; changes only with these arguments).
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN --mount=type=bind,from=wheels,target=/tmp/wheels \
    pip install --find-links /tmp/wheels ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} "torch==${TORCH_VERSION}" \
    && python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

# The other requirements before the source, so that a source change reuses this layer. Left out of
# the image: the package itself (installed below), pytest, ruff, mypy, and Ray (the optional sweep backend).
# The constraint keeps the torch above: a requirements.txt pinning another torch fails here.
COPY requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,from=wheels,target=/tmp/wheels \
    grep -vE '^[[:space:]]*(-e|ray|pytest|ruff|mypy)([^A-Za-z0-9_.-]|$)' /tmp/requirements.txt > /tmp/requirements-image.txt \
    && echo "torch==${TORCH_VERSION}" > /tmp/constraints.txt \
    && pip install --find-links /tmp/wheels -r /tmp/requirements-image.txt -c /tmp/constraints.txt \
    && rm /tmp/requirements*.txt /tmp/constraints.txt

WORKDIR /app
COPY . /app
RUN pip install --no-deps -e /app \
    && python -m compileall -q /app \
    && chown merlion:merlion /app/runs /app/data

ENV MERLION_STUDIO_HOME=/app \
    MERLION_RUNS_DIR=/app/runs \
    MERLION_DATA_DIR=/app/data \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_MAX_UPLOAD_SIZE=200 \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

USER merlion

# The demo, as background jobs in the runs folder (docker/build_demo.py; a few minutes of CPU).
ARG DEMO_ENVS=maze,multistep-maze
RUN if [ -n "$DEMO_ENVS" ]; then python /app/docker/build_demo.py --envs "$DEMO_ENVS"; fi

# Jobs, their artifacts and the demo live in the runs folder; uploads in the data folder. A new named
# volume starts with the image's demo; a bind mount of an empty folder starts without it.
VOLUME ["/app/runs", "/app/data"]
EXPOSE 8501
# Streamlit's health endpoint; python instead of curl (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD python -c "import os, sys, urllib.request; port = os.environ.get('STREAMLIT_SERVER_PORT', '8501'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/_stcore/health', timeout=8).read() != b'ok')"
CMD ["streamlit", "run", "app.py"]
