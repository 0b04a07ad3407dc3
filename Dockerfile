# syntax=docker/dockerfile:1
# One image for every MicroCommerce process; the container's command picks it:
#   gateway | payment | product | user | migrate [SERVICE ...]
# Build:  docker build --build-arg VERSION=0.1.0 -t microcommerce:0.1.0 .
# Run:    docker run --read-only -p 8080:8080 microcommerce:0.1.0 gateway

# ---- build: the locked dependencies (hashes checked) and gen/, made as a developer makes them
FROM python:3.11-slim-bookworm AS build

# DL3008 (pin apt versions): the compilers come from the base image's Debian release, and
# Debian drops superseded versions, so a pin would break the build within weeks; none of it
# reaches the final image.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

# The virtualenv's .pth file holds absolute paths (the Makefile writes $(CURDIR)): the final
# stage keeps the code at the same /app.
WORKDIR /app
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first: a code change does not reinstall them.
COPY Makefile requirements.lock pyproject.toml ./
RUN make install

COPY protos/ protos/
# gen/ holds only a README in git; protoc needs the folder to write into.
RUN mkdir -p gen && make proto

COPY common/ common/
COPY gateway/ gateway/
COPY payment_svc/ payment_svc/
COPY product_svc/ product_svc/
COPY user_svc/ user_svc/
# Bytecode compiled now, because the running container may not write it (read-only root).
RUN .venv/bin/python -m compileall -q common gateway payment_svc product_svc user_svc gen

# ---- final: the interpreter, the virtualenv, the code and gen/; no compilers, make or caches
# The same base as the build stage: the virtualenv's python links to its /usr/local/bin/python3.
FROM python:3.11-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository's URL, e.g. --build-arg SOURCE="$(git remote get-url origin)".
ARG SOURCE=""
LABEL org.opencontainers.image.title="microcommerce" \
      org.opencontainers.image.description="MicroCommerce: REST gateway, payment, product and user gRPC services, migrations" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="NOASSERTION"

# A fixed uid/gid: the chart's runAsUser/fsGroup and a mounted volume's owner match it.
RUN groupadd --system --gid 10001 microcommerce \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin microcommerce \
 && mkdir /data \
 && chown 10001:10001 /data

WORKDIR /app
COPY --from=build --chown=root:root /app/.venv /app/.venv
COPY --from=build --chown=root:root /app/gen /app/gen
COPY --from=build --chown=root:root /app/common /app/common
COPY --from=build --chown=root:root /app/gateway /app/gateway
COPY --from=build --chown=root:root /app/payment_svc /app/payment_svc
COPY --from=build --chown=root:root /app/product_svc /app/product_svc
COPY --from=build --chown=root:root /app/user_svc /app/user_svc

# Every write goes to MC_DATA_DIR or /tmp (both emptyDir volumes in the chart), so the root
# filesystem can be read-only: no bytecode, HOME in /tmp for libraries that cache there, and
# Faust's per-app directory (default "<app id>-data" in the working directory) in /tmp.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    FAUST_DATADIR=/tmp/{conf.name}-data \
    MC_DATA_DIR=/data \
    MC_HOST=0.0.0.0 \
    MC_VERSION=${VERSION}
VOLUME ["/data"]

USER 10001:10001
EXPOSE 8080 8081 8082 8083
# Every process drains on SIGTERM (readiness fails, in-flight calls finish within the grace).
STOPSIGNAL SIGTERM
# No HEALTHCHECK: the image runs five different commands (one of them a Job that exits), so
# no single probe fits, and Kubernetes ignores HEALTHCHECK for the chart's gRPC/HTTP probes.
# checkov:skip=CKV_DOCKER_2: one image, five commands; the chart's probes check each process
ENTRYPOINT ["/app/.venv/bin/python", "-m", "common.entrypoint"]
CMD ["gateway"]
