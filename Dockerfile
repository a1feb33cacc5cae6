# syntax=docker/dockerfile:1
# Serving image (default target `serve`): only the serve extra, no torch, non-root, bundle from a mounted folder.
#   docker build -t rlhf-reward:cpu .
#   docker run -p 8000:8000 -v $PWD/bundles/default:/models/current:ro rlhf-reward:cpu
# GPU image: an NVIDIA CUDA runtime base and the gpu extra (onnxruntime-gpu):
#   docker build -t rlhf-reward:gpu --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#                --build-arg EXTRA=gpu .
#   docker run --gpus all -p 8000:8000 -v $PWD/bundles/default:/models/current:ro rlhf-reward:gpu
# Reward recipes with `code` components need the sandbox's namespaces: on plain Docker add
#   --security-opt seccomp=unconfined --security-opt apparmor=unconfined   (the defaults forbid user namespaces)
# or the service refuses to start with the reason (README "Reward recipes"; k8s/overlays/verifiers for Kubernetes).
# Training job image:
#   docker build -t rlhf-reward:train --target train .
#   docker run -v $PWD/data:/data -v $PWD/bundles:/bundles rlhf-reward:train --data /data/prefs.jsonl --out /bundles/new
# Annotation app image (python -m collect; a team's setup: docs/collect.md "Deploying for a team", k8s/collect):
#   docker build -t rlhf-reward:collect --target collect .
#   docker run -p 127.0.0.1:8100:8100 -v collect-data:/data -e COLLECT_DATABASE_URL=/data/labels.sqlite \
#              rlhf-reward:collect                                  # SQLite on a volume; or a postgresql:// URL
#   docker exec CONTAINER python -m collect add-annotator alice      # prints alice's token once
# The admin token comes from $COLLECT_ADMIN_TOKEN (--env-file, a Secret) or is generated into /data (mode 600).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS base
# CUDA base images come without Python; python:* images already have it.
RUN command -v python3 >/dev/null || (apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*)
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PATH=/opt/venv/bin:$PATH

FROM base AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
COPY training ./training
COPY bench ./bench
COPY deploy/install.sh ./deploy/install.sh

FROM source AS build
ARG EXTRA=serve
RUN sh deploy/install.sh /opt/venv "${EXTRA}"

FROM base AS serve
# bubblewrap: the sandbox for `code` reward components (policy programs); tini as PID 1 reaps what the sandboxes and
# verifier workers leave behind (a killed sandbox's orphans would otherwise stay zombies) and forwards SIGTERM.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap tini util-linux \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin rm
ENV RM_HOST=0.0.0.0 RM_PORT=8000 RM_MODEL_DIR=/models/current
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RM_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["tini", "--", "python", "-m", "service"]

FROM source AS train-build
RUN sh deploy/install.sh /opt/venv train

FROM base AS train
COPY --from=train-build /opt/venv /opt/venv
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin rm
USER 10001:10001
WORKDIR /home/rm
ENTRYPOINT ["python", "-m", "training.fit"]

FROM source AS collect-build
# The annotation app needs the server's dependencies and psycopg (PostgreSQL, the team engine), never torch.
COPY collect ./collect
RUN sh deploy/install.sh /opt/venv serve \
    && /opt/venv/bin/python -m pip install --quiet --no-cache-dir "psycopg[binary]>=3.2" \
    && /opt/venv/bin/python -c "import collect.app, psycopg, sys; assert 'torch' not in sys.modules"

FROM base AS collect
# tini as PID 1 forwards SIGTERM (uvicorn then finishes the requests in flight) and reaps. /data is the working
# folder, owned by the app's user: a SQLite database on a volume mounted there, or the generated admin token.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=collect-build /opt/venv /opt/venv
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin collect \
    && install -d -o 10001 -g 10001 -m 700 /data
WORKDIR /data
USER 10001:10001
EXPOSE 8100
# The port is the app's default; an image run with another --port needs its own --health-cmd.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8100/healthz', timeout=2)"]
ENTRYPOINT ["tini", "--", "python", "-m", "collect"]
CMD ["serve", "--host", "0.0.0.0"]

# The last stage is the default target: keep it the serving image.
FROM serve
