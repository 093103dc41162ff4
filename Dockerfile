# syntax=docker/dockerfile:1
# The API alone; docker-compose.yml adds PostgreSQL and Redis. DATABASE_URL and REDIS_URL
# are required: the image has no embedded stores (the extra sneakerdrop[embedded] is not
# installed), and ENV=production refuses them anyway.

# --- build: the wheel, with lua/ and migrations/ inside it (as app.lua, app.migrations) ---
FROM python:3.12-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY app ./app
COPY lua ./lua
COPY migrations ./migrations
RUN pip wheel --no-deps -w /wheels .

# --- runtime: the built wheel and the pinned versions of its dependencies ---
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    PORT=4000

COPY --from=build /src/constraints.txt /tmp/constraints.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install -c /tmp/constraints.txt /tmp/wheels/sneakerdrop-*.whl \
    && rm -rf /tmp/wheels /tmp/constraints.txt \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin sneakerdrop \
    && mkdir -p /data && chown sneakerdrop:sneakerdrop /data

# Nothing of the source tree: the service runs from site-packages, in any folder.
WORKDIR /data
USER sneakerdrop
VOLUME ["/data"]
EXPOSE 4000

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '4000')}/healthz\", timeout=2)"]

# sneakerdrop handles SIGTERM itself: a graceful uvicorn stop.
CMD ["sneakerdrop", "serve", "--host", "0.0.0.0"]
