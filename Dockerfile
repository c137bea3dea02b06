# syntax=docker/dockerfile:1
# rho-serve images: a TGI-compatible server for the bundled math model (or any model mounted under /data).
#
#   docker build -t rho-serve:0.1.0-cpu .                        # CPU image (the default, last stage)
#   docker build --target cuda -t rho-serve:0.1.0-cuda .         # CUDA image (PyTorch's CUDA wheels, Triton)
#   docker run --rm -p 8080:8080 -e API_KEY=secret rho-serve:0.1.0-cpu
#
# Configuration is TGI's environment variables (MODEL_ID, PORT, MAX_CONCURRENT_REQUESTS, API_KEY or API_KEY_FILE, ...),
# read by `rho-serve` itself; the image runs as uid 1000 on the non-privileged port 8080 (TGI's image uses 80).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0

# ---- source: what the wheel is built from, in a stage of its own so code changes do not invalidate the torch layer -
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY router /src/router
COPY server /src/server
COPY grammars /src/grammars
COPY slm_train /src/slm_train
COPY evaluation /src/evaluation
COPY bench /src/bench

# ---- builders: one virtualenv at /opt/venv, copied whole into the runtime stage ------------------------------------
FROM ${PYTHON_IMAGE} AS builder-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

FROM builder-base AS builder-cpu
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first, from the CPU-only index (about 200 MB instead of several GB of CUDA libraries); installing the
# package then finds it satisfied and does not pull the CUDA build from PyPI. The pip cache mount keeps rebuilds
# after a code change from downloading the dependencies again.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=source /src /src
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install /src

FROM builder-base AS builder-cuda
ARG TORCH_VERSION
ARG TORCH_INDEX_URL=https://pypi.org/simple
# PyPI's Linux torch wheel is the CUDA build and brings the CUDA runtime libraries as nvidia-* wheels; the driver comes
# from the host through the NVIDIA container toolkit. The [gpu] extra adds Triton for the paged-attention kernels.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=source /src /src
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install "/src[gpu]"

# ---- runtime: shared by both images ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
# uid/gid 1000 is numeric in USER below so that Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --gid 1000 rho \
 && useradd --uid 1000 --gid rho --no-create-home --home-dir /tmp --shell /usr/sbin/nologin rho \
 && mkdir -p /data \
 && chown 1000:1000 /data
# Caches point into /tmp so the container also runs with a read-only root filesystem (Kubernetes mounts an emptyDir
# there). HOSTNAME is pinned because Docker and Kubernetes set it to the container's name, which TGI-style launchers
# would otherwise bind to.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    HF_HOME=/tmp/cache/huggingface \
    TRITON_CACHE_DIR=/tmp/cache/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/cache/torchinductor \
    MPLCONFIGDIR=/tmp/cache/matplotlib \
    MODEL_ID=/opt/rho-serve/models/rho-math-tiny \
    HOSTNAME=0.0.0.0 \
    PORT=8080 \
    GRACEFUL_TERMINATION_TIMEOUT=90
WORKDIR /opt/rho-serve
COPY models/rho-math-tiny ./models/rho-math-tiny
COPY docker/healthcheck.py ./healthcheck.py
VOLUME ["/data"]
EXPOSE 8080
# Model loading takes seconds on CPU and longer for big models on GPU: the start period covers it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 CMD ["python", "/opt/rho-serve/healthcheck.py"]
# rho-serve is PID 1 and handles SIGTERM itself: it stops accepting, drains in-flight requests for up to
# GRACEFUL_TERMINATION_TIMEOUT seconds, then exits. `docker stop -t` must allow that long (`docker stop -t 100`).
STOPSIGNAL SIGTERM
USER 1000:1000
ENTRYPOINT ["rho-serve"]
CMD []

FROM runtime-base AS cuda
USER 0:0
# Triton compiles a small C launcher per kernel at run time, so the CUDA image needs a C compiler; Debian package
# versions are not pinned because the base image tag fixes the Debian release and pinned point versions vanish from
# the archive with each security update.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder-cuda /opt/venv /opt/venv
# The NVIDIA container toolkit reads these to expose the GPUs and the driver's compute libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 1000:1000

FROM runtime-base AS cpu
COPY --from=builder-cpu /opt/venv /opt/venv
