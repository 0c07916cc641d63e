# The cae service: FastAPI + onnxruntime serving the shipped models/. No torch, no training code.
#
#   docker build -t cae .                                               # CPU image
#   docker build --build-arg VARIANT=gpu -t cae:gpu .                   # CUDA image: onnxruntime-gpu + CUDA/cuDNN wheels
#   docker run -p 8000:8000 -e CAE_API_KEY=secret cae
#   docker run --gpus all -p 8000:8000 -e CAE_API_KEY=secret cae:gpu   # needs the NVIDIA container toolkit
#
# Settings: CAE_* environment variables (README, "Service settings").
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# cpu | gpu: which requirements file, and whether the service insists on the CUDA provider.
ARG VARIANT=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A virtual environment works the same on the official image and on distributions that forbid
# installing into the system Python (PEP 668).
RUN python -m venv /opt/venv && pip install --upgrade pip==26.0.1

# Dependencies first, in their own layer: changing the code or the models does not reinstall them.
COPY service/requirements.txt service/requirements-gpu.txt /tmp/
RUN if [ "$VARIANT" = gpu ]; then pip install -r /tmp/requirements-gpu.txt; \
    elif [ "$VARIANT" = cpu ]; then pip install -r /tmp/requirements.txt; \
    else echo "VARIANT must be cpu or gpu, got $VARIANT" >&2; exit 1; fi

WORKDIR /app
COPY cae/ /app/cae/
COPY service/ /app/service/
# The whole folder: the manifest, the model card and the family's ONNX files (one folder per autoencoder).
COPY models/ /app/models/
# The models are read-only for the service's user: owned by root, no write bits.
# (/ itself world-readable: some minimal base images are built from a private 0700 directory.)
RUN find /app/models -type f -exec chmod 0444 {} + && find /app/models -type d -exec chmod 0555 {} + && chmod 0755 / \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin cae
USER 10001

ENV CAE_MODEL_DIR=/app/models \
    CAE_HOST=0.0.0.0 \
    CAE_PORT=8000 \
    CAE_GRPC_PORT=8001 \
    CAE_PROVIDERS=auto
# (In the GPU image, -e CAE_PROVIDERS=cuda makes startup fail rather than fall back to the CPU.)
EXPOSE 8000 8001
# The port opens only after the warm-up (every model measured: about a minute for the shipped folder on
# 2 cores), so failed checks before then must not count: a 300 s start period.
HEALTHCHECK --interval=10s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CAE_PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "service"]
