# foldserve: BatchNormalization-folded Keras models on ONNX Runtime.
#
#   docker build -t foldserve .                                      # CPU image
#   docker build -t foldserve:gpu --build-arg ORT_VARIANT=gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 .   # CUDA 13 + cuDNN 9
#   docker build -t foldserve:serving --build-arg FOLDSERVE_EXTRAS=serve .   # serving only
#
# The serving-only image (FOLDSERVE_EXTRAS=serve) has ONNX Runtime and the service but
# no TensorFlow: it serves the shared model repository and refuses uploads (409), which
# go to the full image (FOLDSERVE_EXTRAS=fold, the default) or `foldserve fold`.
#
# Configuration is only through FOLDSERVE_* environment variables; the model
# repository is the volume /models.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- base: the chosen image, with python3 when it has none (the CUDA runtime images) --
FROM ${BASE_IMAGE} AS base
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi

# ---- build: a virtual environment with foldserve and its dependencies -----------------
FROM base AS build
# cpu: the CPU build of ONNX Runtime (a tenth of the size); gpu: onnxruntime-gpu. Both at the
# version pyproject.toml pins (service/_compat.py uses its internals).
ARG ORT_VARIANT=cpu
ARG ONNXRUNTIME_SPEC="onnxruntime==1.31.1"
# fold: TensorFlow too, so the server folds uploads; serve: ONNX Runtime and the service.
ARG FOLDSERVE_EXTRAS=fold
WORKDIR /src
RUN python3 -m venv /opt/foldserve
COPY pyproject.toml README.md ./
COPY folding ./folding
COPY service ./service
RUN /opt/foldserve/bin/pip install --no-cache-dir ".[${FOLDSERVE_EXTRAS}]" \
    && if [ "${ORT_VARIANT}" = "cpu" ]; then \
         /opt/foldserve/bin/pip uninstall -y onnxruntime-gpu \
         && /opt/foldserve/bin/pip install --no-cache-dir "${ONNXRUNTIME_SPEC}"; \
       fi \
    && find /opt/foldserve -name '__pycache__' -type d -prune -exec rm -rf {} +

# ---- runtime: the virtual environment and the demo model, nothing else ----------------
FROM base AS runtime
COPY --from=build /opt/foldserve /opt/foldserve
RUN mkdir -p /models && chown 10001:10001 /models
COPY --chown=10001:10001 models/digits /models/digits
ENV PATH=/opt/foldserve/bin:$PATH \
    FOLDSERVE_HOST=0.0.0.0 \
    FOLDSERVE_PORT=8080 \
    FOLDSERVE_GRPC_PORT=8081 \
    FOLDSERVE_MODELS_DIR=/models \
    TF_CPP_MIN_LOG_LEVEL=3 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080 8081
VOLUME ["/models"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('FOLDSERVE_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["foldserve", "serve"]
