# syntax=docker/dockerfile:1
# The API alone; docker-compose.yml adds PostgreSQL and Redis. Run without DATABASE_URL /
# REDIS_URL, it starts its embedded stores under DATA_DIR (/data) like a local start.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    PORT=4000

WORKDIR /app

# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md* ./
RUN mkdir app && touch app/__init__.py \
    && pip install . \
    && pip uninstall -y sneakerdrop \
    && rm -rf app build sneakerdrop.egg-info

# The application. Installed in place (-e): lua/ and migrations/ are read next to app/.
COPY . .
RUN pip install --no-deps -e . \
    && python -m compileall -q app migrations \
    && useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin sneakerdrop \
    && mkdir -p /data && chown sneakerdrop:sneakerdrop /data

USER sneakerdrop
VOLUME ["/data"]
EXPOSE 4000

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '4000')}/healthz\", timeout=2)"]

# sneakerdrop handles SIGTERM itself: a graceful uvicorn stop, then its stores.
CMD ["sneakerdrop", "serve", "--host", "0.0.0.0"]
