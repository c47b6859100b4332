# syntax=docker/dockerfile:1
# One image for every device: the torch build is the only difference between the CPU and GPU images.
#   CPU (default):  docker build -t kronos-service:cpu .
#   GPU (CUDA):     docker build -t kronos-service:gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
# Podman builds it the same way: podman build --format docker -t kronos-service:cpu .  (--format docker
# keeps the HEALTHCHECK, which the OCI image format has no field for).
# (PyPI's Linux torch wheel is the CUDA build; pick https://download.pytorch.org/whl/cuXXX to match an
# older driver.) The bundled kronos-demo model is in /models, so the image runs with no mount; mount
# a real checkpoint folder read-only over it: -v /srv/kronos/Kronos-small:/models:ro

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with torch and the package, nothing else --------------------
FROM ${PYTHON_IMAGE} AS build

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Where everything else comes from (and torch's dependencies, if the torch index lacks a pinned one).
ARG PYPI_INDEX_URL=https://pypi.org/simple

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# The README's install, in two steps so the torch layer is cached across code changes: torch from
# the chosen wheel index first, then the package, which keeps that torch (it allows 2.2 to 2.13).
# Every version comes from constraints.txt, the repository's lock, so a rebuild gets the same set.
# torch's C++ headers and CMake files (for building extensions) and its C++ test binaries are never
# used by the service: 0.2 GB less.
WORKDIR /src
COPY constraints.txt ./
RUN python -m venv /opt/venv \
    && pip install -c constraints.txt "torch==${TORCH_VERSION}" \
        --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PYPI_INDEX_URL}" \
    && rm -rf /opt/venv/lib/python3*/site-packages/torch/include /opt/venv/lib/python3*/site-packages/torch/share \
        /opt/venv/lib/python3*/site-packages/torch/test

COPY pyproject.toml README.md ./
COPY model ./model
COPY services ./services
RUN pip install -c constraints.txt --index-url "${PYPI_INDEX_URL}" . \
    && python -c "import torch, model, services.kronos_fastapi; print('torch', torch.__version__)"

# ---- runtime: the environment, the bundled model, a non-root user ------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Settings for the container; every other KRONOS_* variable is read at start-up (see README).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    KRONOS_HOST=0.0.0.0 \
    KRONOS_PORT=8000 \
    KRONOS_MODEL_PATH=/models \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

RUN groupadd --system --gid 10001 kronos \
    && useradd --system --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin kronos

# The model cache for hub ids (KRONOS_MODEL_PATH=NeoQuasar/Kronos-small): owned by the service user, so a
# named volume mounted here starts writable.
ENV HF_HOME=/cache/huggingface
RUN mkdir -p /cache/huggingface && chown 10001:10001 /cache/huggingface

# The SQLite job store of /v1/jobs (docs/jobs.md): owned by the service user too, for the compose
# files' kronos-jobs volume (KRONOS_JOBS_DATABASE_URL=postgresql://... replaces it).
ENV KRONOS_JOBS_DIR=/var/lib/kronos/jobs
RUN mkdir -p /var/lib/kronos/jobs && chown 10001:10001 /var/lib/kronos/jobs

COPY --from=build /opt/venv /opt/venv
# Root-owned and read-only for the service user, like the mount that replaces it.
COPY model/bundled/kronos-demo /models

# Numeric, so runtimes that enforce non-root (e.g. Kubernetes runAsNonRoot) can verify it.
USER 10001:10001
WORKDIR /home/kronos
EXPOSE 8000

# Liveness only (the process serves); compose files check readiness (/v1/readyz) instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/healthz' % os.environ.get('KRONOS_PORT', '8000'), timeout=4)"]

CMD ["kronos-serve"]
