# syntax=docker/dockerfile:1
# Trading Helper API + ingest service. Two stages: dependencies are built into a virtualenv in
# the first, and only that virtualenv is copied into a slim runtime that runs as a non-root user.
# The chart page's JavaScript library is vendored in the package (src/trading_helper/api/static/
# vendor/), so no Node.js is needed here.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data/tokens /data/archive \
    && chown app:app /data/tokens /data/archive \
    && chmod 700 /data/tokens
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/app
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=3)"]
CMD ["sh", "-c", "trading-helper db migrate && exec trading-helper serve"]
