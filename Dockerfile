# syntax=docker/dockerfile:1
# One image for the Ray head, the Ray workers and the API (docker-compose.yml): Ray needs the same
# Ray and Python versions on every node, and the Jobs driver imports the same code the API does.
#
# Base: python:3.11-slim + the torch wheel from PyPI, not an nvidia/cuda or pytorch/pytorch image.
# * PyPI's Linux x86_64 torch wheel is the CUDA build and brings its CUDA runtime, cuDNN and NCCL
#   as nvidia-* wheels, so a GPU container needs only the host's NVIDIA driver (injected by the
#   NVIDIA Container Toolkit); an nvidia/cuda base would duplicate those libraries.
# * We choose the Python: 3.11, the version constraints.txt was resolved with. pytorch/pytorch
#   images ship a conda Python whose minor version follows torch, and its tags bundle a torch we
#   would have to match to constraints.txt by hand.
# * Build a CPU-only image (about 1 GB instead of several) for hosts without GPUs:
#     docker compose build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#   (or TORCH_INDEX_URL=... in .env). The version is the same either way: torch==2.13.0+cpu
#   satisfies the constraint torch==2.13.0.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

# Empty: PyPI (CUDA build). https://download.pytorch.org/whl/cpu: the CPU build.
ARG TORCH_INDEX_URL=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0

RUN groupadd --gid 1000 lodotune \
    && useradd --uid 1000 --gid lodotune --create-home --shell /bin/bash lodotune \
    && mkdir -p /artifacts /data \
    && chown lodotune:lodotune /artifacts /data

WORKDIR /opt/lodotune

# Layers from the least to the most often changed: torch (the largest), the dependencies, our code.
# Versions come from constraints.txt only (torch==2.13.0, ray==2.60.0, ...).
COPY constraints.txt ./
RUN TORCH_VERSION="$(grep -E '^torch==' constraints.txt | cut -d= -f3)" \
    && test -n "$TORCH_VERSION" \
    && pip install "torch==${TORCH_VERSION}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY README.md ./
COPY lodo ./lodo
COPY tasks ./tasks
COPY schedules ./schedules
COPY tuner ./tuner
COPY api ./api
RUN pip install -c constraints.txt . \
    && python -c "import ray, torch; print('ray', ray.__version__, 'torch', torch.__version__)"

# Everything runs unprivileged; /artifacts (shared volume) and /data (datasets) belong to it.
USER lodotune
WORKDIR /home/lodotune
ENV LODOTUNE_ARTIFACT_DIR=/artifacts \
    LODOTUNE_DATA_DIR=/data \
    TORCHINDUCTOR_CACHE_DIR=/home/lodotune/.cache/torchinductor

# 8000: API. 6379 (GCS) and 8265 (dashboard + Jobs API): Ray head, internal network only.
EXPOSE 8000 6379 8265
CMD ["lodotune", "serve", "--host", "0.0.0.0", "--port", "8000"]
