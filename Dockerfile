# syntax=docker/dockerfile:1
# bids_encoder: a BIDS-App that fits fMRI encoding models (GLM, population receptive fields) with TensorFlow.
#
#   docker build -t bids_encoder:0.1.0 .                                 GPU image (tensorflow[and-cuda])
#   docker build --build-arg TENSORFLOW=cpu \
#                --build-arg IMAGE_TAG=bids_encoder:0.1.0-cpu -t bids_encoder:0.1.0-cpu .   CPU only, smaller
#
#   docker run --rm --gpus all -v BIDS:/data:ro -v OUT:/out bids_encoder:0.1.0 /data /out participant
#
# Keep VERSION equal to bids_encoder/_version.py (tests/test_shipping.py checks it; CI passes it explicitly).
ARG PYTHON_VERSION=3.11

# ---- build: a virtual environment holding the app and the TensorFlow flavour asked for -------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ARG TENSORFLOW=gpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bids_encoder ./bids_encoder
# The project's own requirements with `tensorflow` swapped for the flavour asked for (same version bounds):
# gpu: tensorflow[and-cuda] (the CUDA libraries come as wheels: only the host driver is needed); cpu: tensorflow-cpu.
RUN case "$TENSORFLOW" in \
      gpu) flavour="tensorflow[and-cuda]" ;; \
      cpu) flavour="tensorflow-cpu" ;; \
      *) echo "TENSORFLOW must be gpu or cpu, not '$TENSORFLOW'" >&2; exit 1 ;; \
    esac \
 && python -c "import sys, tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
print('\n'.join(sys.argv[1] + d[len('tensorflow'):] if d.startswith('tensorflow') else d for d in deps))" "$flavour" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir --requirement /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps . \
 && python -c "import bids_encoder.cli, tensorflow" \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# ---- runtime: the environment only, run as an unprivileged user ------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
ARG TENSORFLOW=gpu
ARG IMAGE_TAG=bids_encoder:${VERSION}
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="bids_encoder" \
      org.opencontainers.image.description="BIDS-App fitting fMRI encoding models (GLM, pRF) with TensorFlow (${TENSORFLOW} build)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/bids-encoder/bids_encoder" \
      org.opencontainers.image.documentation="https://github.com/bids-encoder/bids_encoder#readme"
RUN groupadd --system --gid 1000 bids \
 && useradd --system --uid 1000 --gid bids --home-dir /home/bids --create-home --shell /usr/sbin/nologin bids
COPY --from=builder /opt/venv /opt/venv
# Threads: TensorFlow sizes its own pool (set it with --nthreads, which also sets the BLAS pools); BLAS/OpenMP start
# at one thread so that numpy and TensorFlow never oversubscribe the CPUs a scheduler gave the container.
# Writable places are under /tmp, so the image also runs under `docker run -u $(id -u)` and read-only Apptainer.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    MPLBACKEND=Agg \
    MPLCONFIGDIR=/tmp/matplotlib \
    NILEARN_DATA=/tmp/nilearn_data \
    BIDS_ENCODER_CONTAINER=docker \
    BIDS_ENCODER_IMAGE=${IMAGE_TAG}
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["bids_encoder"]
CMD ["--help"]
