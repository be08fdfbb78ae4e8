# ringkv node image. With internet: `docker build -t ringkv .` (or `docker compose build`).
# Without a registry (CI here): `--build-arg BASE=$(scripts/build-base-image)`, a local
# Debian image whose pip installs from bundled wheels.
ARG BASE=python:3.11-slim
FROM ${BASE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The exact, hashed dependencies of requirements/image.lock (refresh with scripts/lock),
# then the project from the checkout (.dockerignore keeps tests, docs and caches out)
# without resolving anything again, and a user with a fixed uid, so a volume's files
# keep their owner when the image is rebuilt. One RUN: every layer costs a diff of the
# whole tree on some storage drivers.
COPY . /tmp/ringkv-src
RUN pip install --no-cache-dir --require-hashes -r /tmp/ringkv-src/requirements/image.lock \
    && pip install --no-cache-dir --no-deps /tmp/ringkv-src \
    && rm -rf /tmp/ringkv-src \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /data ringkv \
    && mkdir -p /data \
    && chown ringkv:ringkv /data

# Bind every interface inside the container; RINGKV_ADVERTISE tells peers the name to
# dial. Everything else comes from RINGKV_* variables (see compose.yaml). Binding beyond
# loopback, a node refuses to start without a cluster secret: give one with
# RINGKV_CLUSTER_SECRET_FILE (compose.yaml generates one) or RINGKV_CLUSTER_SECRET, or
# opt out with RINGKV_INSECURE=1.
ENV RINGKV_HOST=0.0.0.0 \
    RINGKV_HTTP_PORT=8080 \
    RINGKV_RPC_PORT=9080 \
    RINGKV_DATA_DIR=/data
VOLUME /data
WORKDIR /data
EXPOSE 8080 9080
USER ringkv

# /health (liveness) answers 200 once the node is up and holds its ranges (503 while
# joining, leaving or left; /ready also waits for enough peers to reach the quorums):
# urlopen raises on anything but 2xx, so the exit code says healthy or not.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RINGKV_HTTP_PORT', '8080') + '/health', timeout=2)"]

# SIGTERM (docker stop) stops the node cleanly; exec form keeps ringkv as PID 1.
ENTRYPOINT ["ringkv"]
CMD ["serve"]
