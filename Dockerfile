# syntax=docker/dockerfile:1
#
# Opsdeck image: one image for every role (web, worker, beat, migrate). The role is chosen by the
# command (compose overrides CMD for worker/beat/migrate) and named by OPSDECK_ROLE.

# --- Stage 1: dependencies into a virtualenv ---------------------------------------------------
FROM python:3.11-slim AS deps

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:$PATH"

# Every requirement ships manylinux wheels (psycopg-binary brings its own libpq), so no compiler
# or -dev packages are needed here.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

# --- Stage 2: runtime ---------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH="/opt/venv/bin:$PATH" \
    DJANGO_SETTINGS_MODULE=project.settings \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 opsdeck \
 && useradd --system --uid 10001 --gid opsdeck --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin opsdeck

COPY --from=deps /opt/venv /opt/venv

WORKDIR /app
# Code stays owned by root (read-only for the app user); only var/ is writable.
COPY . .

# Settings only parse DATABASE_URL (no connection is made), and DEBUG=false refuses the
# development SECRET_KEY, hence the throwaway values. DEBUG=false also selects whitenoise's
# manifest storage, so the hashed file names are baked into the image.
RUN SECRET_KEY=build-only DEBUG=false \
    DATABASE_URL=postgres://build:build@127.0.0.1:5432/build \
    python manage.py collectstatic --noinput \
 && mkdir -p /app/var/archive \
 && chown -R opsdeck:opsdeck /app/var

USER opsdeck

EXPOSE 8000

# python:3.11-slim has no curl. urlopen raises on connection errors and non-2xx answers.
# /health is exempt from the HTTPS redirect; keep 127.0.0.1 in ALLOWED_HOSTS for this check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)" || exit 1

# Shell form so ${PORT}, ${WEB_CONCURRENCY} and ${WEB_THREADS} are read when the container starts;
# exec makes gunicorn PID 1 so it receives SIGTERM and shuts down gracefully. WEB_THREADS > 1 runs
# gthread workers (docs/operations.md, Sizing).
CMD ["sh", "-c", "exec gunicorn project.wsgi:application --bind 0.0.0.0:${PORT:-8000} --workers ${WEB_CONCURRENCY:-3} --threads ${WEB_THREADS:-1} --timeout 60 --access-logfile -"]
