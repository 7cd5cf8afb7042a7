# syntax=docker/dockerfile:1
# chain429 as a container (docs/deploy.md). Two stages: the first builds the wheel
# from this checkout, the second installs only that wheel in a slim image, so no
# compiler, source tree or build tool ships. Nothing secret is built in: the config
# and its .env are mounted at run time, keys arrive as environment variables.
#
#   docker build -t chain429 .
#   docker run -p 127.0.0.1:3429:3429 --env-file .env \
#     -v "$PWD/chain429.yaml:/etc/chain429/chain429.yaml:ro" chain429

ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY . .
# The README's install step (`pip install .`), as a wheel to carry to the next stage.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:${PYTHON_VERSION}-slim AS runtime
# A system user with no login and no password; it owns only its data directory.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/chain429 --create-home \
        --shell /usr/sbin/nologin chain429 \
    && mkdir -p /etc/chain429
# With PostgreSQL's driver for the request log (the `postgres` extra); Redis's
# client, for shared limits, is one of chain429's own dependencies. The wheel is
# mounted from the build stage, not copied: no layer keeps it.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    pip install --no-cache-dir "$(ls /dist/chain429-*.whl)[postgres]"
ENV PYTHONUNBUFFERED=1 \
    CHAIN429_CONFIG=/etc/chain429/chain429.yaml \
    CHAIN429_HOME=/var/lib/chain429
USER chain429
WORKDIR /var/lib/chain429
# The default SQLite request log lives here when no databaseUrl is set.
VOLUME ["/var/lib/chain429"]
EXPOSE 3429
# /health answers 200 while the process serves (its `status` says "degraded" when
# the database or the config needs an operator), so this restarts only a dead one.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3429'), timeout=2)"]
# In a container the address to listen on is the container's own: 0.0.0.0, which
# chain429 allows only with settings.apiKeys (it refuses to start keyless there).
CMD ["chain429", "serve", "--host", "0.0.0.0"]
