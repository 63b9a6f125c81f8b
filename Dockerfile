# syntax=docker/dockerfile:1
# meshbot: `meshbot serve` on a slim Python, non-root, read-only root filesystem friendly.
# Build:  docker build -t meshbot:0.1.0 .
# The SQLite database lives on a mounted volume (MESHBOT_DB=/var/lib/meshbot/meshbot.db).
#
# Reproducible: the base image is pinned by digest (a tag moves with every Debian and Python patch
# release) and the Python packages by requirements.lock.  The digest below was NOT resolved from
# this repository's build machines, which cannot reach a container registry; it is a published
# digest of python:3.11-slim-bookworm.  Refresh it before a release, and whenever you want the
# base image's security fixes, in both FROM lines:
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# (the index digest, so the same line builds on amd64 and arm64).

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91 AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/meshbot
COPY requirements.lock pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
# pip byte-compiles what it installs, so the read-only final image never needs to write a .pyc.
# --constraint: meshbot's dependencies at the versions in requirements.lock, nothing newer.  The `graphs`
# extra (matplotlib) draws the error-ratio graph an incident's thread gets (docs/timeline.md#in-slack).
RUN /opt/meshbot/bin/pip install --constraint requirements.lock ".[graphs]"

FROM python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91
LABEL org.opencontainers.image.title="meshbot" \
      org.opencontainers.image.description="ChatOps for Istio/Envoy service-mesh incidents" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes can check runAsNonRoot without looking the name up.
RUN groupadd --system --gid 10001 meshbot \
    && useradd --system --uid 10001 --gid meshbot --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin meshbot \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/meshbot
COPY --from=build /opt/meshbot /opt/meshbot
COPY playbooks /opt/meshbot/share/playbooks
COPY examples/demo /opt/meshbot/share/demo
ENV PATH=/opt/meshbot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MESHBOT_PLAYBOOKS=/opt/meshbot/share/playbooks \
    MESHBOT_DB=/var/lib/meshbot/meshbot.db \
    MESHBOT_PORT=3000
USER 10001:10001
WORKDIR /var/lib/meshbot
VOLUME ["/var/lib/meshbot"]
EXPOSE 3000
# python, not curl: the slim image has no curl, and nothing is installed just for the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('MESHBOT_PORT', '3000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["meshbot"]
CMD ["serve"]
