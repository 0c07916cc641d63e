# The cae service: FastAPI + onnxruntime serving the shipped models/. No torch, no training code.
#
#   docker build -t cae .                                   # CPU image (default target)
#   docker build --target gpu -t cae:gpu .                  # CUDA image (onnxruntime-gpu + CUDA/cuDNN wheels)
#   docker run -p 8000:8000 -e CAE_API_KEY=secret cae
#   docker run --gpus all -p 8000:8000 -e CAE_API_KEY=secret cae:gpu
#
# Settings: CAE_* environment variables (README, "Service settings").
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A virtual environment works the same on the official image and on distributions that forbid
# installing into the system Python (PEP 668).
RUN python -m venv /opt/venv && pip install --upgrade pip==26.0.1
WORKDIR /app
ENV CAE_MODEL_DIR=/app/models \
    CAE_HOST=0.0.0.0 \
    CAE_PORT=8000
EXPOSE 8000

# Dependencies first, in their own layer: code changes do not reinstall them.
FROM base AS cpu-deps
COPY service/requirements.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

FROM base AS gpu-deps
COPY service/requirements-gpu.txt /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt

FROM cpu-deps AS cpu
COPY service/ /app/service/
# The models are read-only for the service's user: owned by root, no write bits.
COPY --chmod=0444 models/*.onnx models/manifest.json models/MODEL_CARD.md /app/models/
RUN chmod 0555 /app/models && useradd --system --uid 10001 --no-create-home cae
USER 10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CAE_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "service"]

FROM gpu-deps AS gpu
ENV CAE_PROVIDERS=cuda
COPY service/ /app/service/
COPY --chmod=0444 models/*.onnx models/manifest.json models/MODEL_CARD.md /app/models/
RUN chmod 0555 /app/models && useradd --system --uid 10001 --no-create-home cae
USER 10001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CAE_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "service"]

# The default target: the CPU image.
FROM cpu
