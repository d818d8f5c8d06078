"""Opsdeck settings: everything comes from environment variables with safe development defaults.

docs/settings.md lists every variable; production sets DEBUG=false, which makes Opsdeck refuse to
start with the development secret key.
"""

import datetime
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OPSDECK_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


# --- Core ------------------------------------------------------------------------------------

DEVELOPMENT_SECRET_KEY = "opsdeck-development-only-secret-key-never-use-in-production"  # noqa: S105 (refused when DEBUG is off)
DEBUG = env_bool("DEBUG", True)
SECRET_KEY = env_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured("DEBUG is off (production mode) but SECRET_KEY is the development key: set SECRET_KEY.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

# Which process this is: web, worker or beat. It names the PostgreSQL connection
# (application_name) so pg_stat_activity shows who holds which connection.
OPSDECK_ROLE = env_str("OPSDECK_ROLE", "web")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "psqlextra",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "project",
    "tasks",
    "approvals",
    "reconciliation",
    "monitoring",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # Outermost of ours: SQL comments name the view for every query of the request, response too.
    "project.db.attribution.SqlOriginMiddleware",
    "project.middleware.RequestIdMiddleware",
    "project.middleware.AccessLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "project.middleware.CompressionMiddleware",
    "project.middleware.StrongETagMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security (production values when DEBUG is off; `check --deploy` stays silent) -----------

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# /health and /ready are probed over plain HTTP by load balancers and orchestrators.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Database ---------------------------------------------------------------------------------

DB_POOL_MIN_SIZE = env_int("DB_POOL_MIN_SIZE", 2)
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10)
DB_POOL_TIMEOUT_S = env_int("DB_POOL_TIMEOUT_S", 10)
DB_STATEMENT_TIMEOUT_MS = env_int("DB_STATEMENT_TIMEOUT_MS", 30_000)
DB_CONNECT_TIMEOUT_S = env_int("DB_CONNECT_TIMEOUT_S", 5)
# PgBouncer in transaction mode cannot keep prepared statements across transactions.
DB_BEHIND_PGBOUNCER = env_bool("DB_BEHIND_PGBOUNCER", False)


def database_config(url: str, application_name: str, *, pool_timeout_s: int | None = None) -> dict:
    config = dj_database_url.parse(url)
    if not config["ENGINE"].endswith("postgresql"):
        raise ImproperlyConfigured(f"DATABASE_URL must be a PostgreSQL URL, not {config['ENGINE']}")
    # psqlextra's backend wraps the prometheus backend (see POSTGRES_EXTRA_DB_BACKEND_BASE).
    config["ENGINE"] = "psqlextra.backend"
    config["CONN_MAX_AGE"] = 0  # the native pool owns connection reuse
    # With the pool this is psycopg_pool's check on checkout (an empty query): after a database
    # restart, dead pooled connections are replaced instead of failing one request each.
    config["CONN_HEALTH_CHECKS"] = True
    options = config.setdefault("OPTIONS", {})
    options.update(
        {
            "application_name": application_name,
            "connect_timeout": DB_CONNECT_TIMEOUT_S,
            "pool": {
                "min_size": DB_POOL_MIN_SIZE,
                "max_size": DB_POOL_MAX_SIZE,
                "timeout": DB_POOL_TIMEOUT_S if pool_timeout_s is None else pool_timeout_s,
                "name": application_name,
            },
        }
    )
    if DB_BEHIND_PGBOUNCER:
        # PgBouncer rejects the `options` startup parameter: set statement_timeout on the role.
        options["prepare_threshold"] = None
        # A server-side cursor (`.iterator()`) outside a transaction would outlive the transaction
        # PgBouncer gave it its server connection for.
        config["DISABLE_SERVER_SIDE_CURSORS"] = True
    else:
        options["options"] = f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}"
    return config


DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/opsdeck")
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL", "")
# A replica read waits at most this long for a connection; then it, and every replica read of the
# process for DB_REPLICA_RETRY_S, goes to the primary (project/db/routers.py).
DB_REPLICA_POOL_TIMEOUT_S = env_int("DB_REPLICA_POOL_TIMEOUT_S", 1)
DB_REPLICA_RETRY_S = env_int("DB_REPLICA_RETRY_S", 30)
DATABASES = {"default": database_config(DATABASE_URL, f"opsdeck-{OPSDECK_ROLE}")}
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = database_config(
        DATABASE_REPLICA_URL, f"opsdeck-{OPSDECK_ROLE}-replica", pool_timeout_s=DB_REPLICA_POOL_TIMEOUT_S
    )
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["project.db.routers.ReadReplicaRouter"]
POSTGRES_EXTRA_DB_BACKEND_BASE = "django_prometheus.db.backends.postgresql"

# --- Redis, cache, Celery -----------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "opsdeck",
        "OPTIONS": {
            # DefaultClient behind a circuit breaker (project/cachebreaker.py).
            "CLIENT_CLASS": "project.cachebreaker.CircuitBreakerClient",
            # Redis going away makes Opsdeck slower, never a 500.
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
        },
    }
}
# After a failed cache call, Redis is skipped for this long (calls answer as misses at once).
CACHE_BREAKER_S = float(env_str("CACHE_BREAKER_S", "5"))
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
DJANGO_REDIS_LOGGER = "opsdeck.cache"


def celery_url_from_redis(url: str) -> str:
    # django-redis speaks unix:///path.sock; kombu spells the same socket redis+socket:///path.sock.
    if url.startswith("unix://"):
        path, _, query = url[len("unix://") :].partition("?")
        return f"redis+socket://{path}" + (f"?virtual_host={query.split('db=')[-1]}" if "db=" in query else "")
    return url


CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", celery_url_from_redis(REDIS_URL))
CELERY_RESULT_BACKEND = None  # outcomes live in JobRun rows, not in a result backend
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT_S", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT_S", 330)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message a worker took but never acknowledged (the whole worker died) is handed out again
# after visibility_timeout. It must exceed the longest job's time limit (maintenance actions:
# 3700 s), or a job still running would be delivered a second time.
CELERY_BROKER_VISIBILITY_TIMEOUT_S = env_int("CELERY_BROKER_VISIBILITY_TIMEOUT_S", 3900)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT_S,
}
# A prefork child killed mid-job (OOM, SIGKILL): its acks_late message goes back to the queue
# instead of being acked as failed. Only scheduled_job jobs are acks_late (they are idempotent);
# the job runner bounds the redeliveries (JOB_MAX_REDELIVERIES) and marks the dead run abandoned.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
JOB_MAX_REDELIVERIES = env_int("JOB_MAX_REDELIVERIES", 3)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Queues: default, automation, reconciliation, webhooks, maintenance (workers take them with -Q).
CELERY_TASK_ROUTES = {
    "approvals.*": {"queue": "automation"},
    "reconciliation.*": {"queue": "reconciliation"},
    "webhooks.*": {"queue": "webhooks"},
    "tasks.notify_*": {"queue": "webhooks"},
    "monitoring.maintenance_*": {"queue": "maintenance"},
    "project.maintain_partitions": {"queue": "maintenance"},
    "project.refresh_materialized_view": {"queue": "maintenance"},
    "project.delete_expired_api_tokens": {"queue": "maintenance"},
}
# django-celery-beat's DatabaseScheduler, stamping each message with its schedule slot so a second
# beat cannot run a schedule twice in one slot (project/beat.py).
CELERY_BEAT_SCHEDULER = "project.beat:SlottedDatabaseScheduler"

# --- Outbox: jobs asked for by writes (project/outbox.py, docs/operations.md) ------------------

# A request waits at most this long for the broker after its commit (connect and send, no retry).
OUTBOX_PUBLISH_TIMEOUT_S = float(env_str("OUTBOX_PUBLISH_TIMEOUT_S", "1.0"))
# After a failed publish, a process leaves publishing to the relay for this long.
OUTBOX_BREAKER_S = float(env_str("OUTBOX_BREAKER_S", "10"))
# The relay publishes messages at least this old (younger ones are being published after commit).
OUTBOX_RELAY_AFTER_S = float(env_str("OUTBOX_RELAY_AFTER_S", "10"))
OUTBOX_RELAY_BATCH = env_int("OUTBOX_RELAY_BATCH", 500)
OUTBOX_KEEP_DAYS = env_int("OUTBOX_KEEP_DAYS", 7)  # published messages are deleted after this

# --- Retention of operational tables (project/retention.py, docs/operations.md#retention) ------
# Per table: {"project.JobRun": {"keep_days": 60, "batch_size": 500, "enabled": true,
# "mode": "archive"}}; business records refuse "delete".
try:
    RETENTION_OVERRIDES = __import__("json").loads(env_str("RETENTION_OVERRIDES", "{}"))
except ValueError as exc:
    raise ImproperlyConfigured(f"RETENTION_OVERRIDES must be a JSON object: {exc}") from None
if not isinstance(RETENTION_OVERRIDES, dict) or not all(isinstance(v, dict) for v in RETENTION_OVERRIDES.values()):
    raise ImproperlyConfigured('RETENTION_OVERRIDES must map "app.Model" to an object of settings')
RETENTION_MAX_BATCHES = env_int("RETENTION_MAX_BATCHES", 100)  # per table and run (hourly)
RETENTION_BUDGET_S = env_int("RETENTION_BUDGET_S", 1500)  # no batch starts after this (limit: 1800 s)
RETENTION_LOCK_TIMEOUT = env_str("RETENTION_LOCK_TIMEOUT", "2s")  # per batch
RETENTION_STATEMENT_TIMEOUT = env_str("RETENTION_STATEMENT_TIMEOUT", "60s")  # per batch
RETENTION_BEHIND_SLACK_S = env_int("RETENTION_BEHIND_SLACK_S", 86400)  # cockpit "behind" (alert: same)
CELERY_TIMEZONE = "UTC"

# --- API --------------------------------------------------------------------------------------

API_PAGE_SIZE_DEFAULT = 50
API_PAGE_SIZE_MAX = 200
# Request bodies: JSON and form bodies above this many bytes are a 413 (Django's default, 2.5 MB;
# CSV uploads stream and are not bound by it). JSON nested deeper than API_JSON_MAX_DEPTH is a 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
DATA_UPLOAD_MAX_NUMBER_FIELDS = env_int("DATA_UPLOAD_MAX_NUMBER_FIELDS", 1000)
API_JSON_MAX_DEPTH = env_int("API_JSON_MAX_DEPTH", 32)
THROTTLE_USER_RATE = env_str("THROTTLE_USER_RATE", "100/min")
THROTTLE_ANON_RATE = env_str("THROTTLE_ANON_RATE", "20/min")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "project.api.authentication.TokenAuthentication",  # knox's, one query per request
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["project.api.permissions.ModelPermissions"],
    "DEFAULT_PAGINATION_CLASS": "project.api.pagination.CursorPagination",
    "PAGE_SIZE": API_PAGE_SIZE_DEFAULT,
    "DEFAULT_FILTER_BACKENDS": ["project.api.filters.FilterBackend"],  # django-filter's, skipped when unused
    "DEFAULT_RENDERER_CLASSES": [
        "project.api.renderers.ORJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "project.api.renderers.ORJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # DRF's rates and scopes, counted atomically in one Redis call and once per request, so refused
    # (401/403) requests are throttled too (project/api/throttling.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "project.api.throttling.AnonRateThrottle",
        "project.api.throttling.UserRateThrottle",
        "project.api.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": THROTTLE_ANON_RATE,
        "user": THROTTLE_USER_RATE,
        # Per-scope rates: a view sets `throttle_scope`.
        "bulk": env_str("THROTTLE_BULK_RATE", "30/min"),
        "pending_count": env_str("THROTTLE_PENDING_COUNT_RATE", "120/min"),
        # Reconciliation exports: one request streams a whole execution; not counted as "user".
        "export": env_str("THROTTLE_EXPORT_RATE", "20/min"),
    },
    "EXCEPTION_HANDLER": "project.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
if not DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"] = ["project.api.renderers.ORJSONRenderer"]

# Admin login: this many wrong passwords for one username from one address within the window, and
# further attempts are refused until it ends (project/adminlogin.py).
ADMIN_LOGIN_MAX_FAILURES = env_int("ADMIN_LOGIN_MAX_FAILURES", 5)
ADMIN_LOGIN_WINDOW_S = env_int("ADMIN_LOGIN_WINDOW_S", 900)

API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 365)
REST_KNOX = {
    # Tokens are for other systems: long-lived, stored as a SHA-512 digest, revocable in the admin.
    # API_TOKEN_TTL_DAYS=0 means tokens never expire.
    "TOKEN_TTL": datetime.timedelta(days=API_TOKEN_TTL_DAYS) if API_TOKEN_TTL_DAYS else None,
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
# A token seen in the last API_TOKEN_CACHE_TTL_S seconds authenticates without a query, in each web
# process (project/api/authentication.py). A token deleted in the admin keeps working in the
# other processes for at most this long; 0 reads the database on every request.
API_TOKEN_CACHE_TTL_S = env_int("API_TOKEN_CACHE_TTL_S", 10)
API_TOKEN_CACHE_SIZE = env_int("API_TOKEN_CACHE_SIZE", 10_000)

SPECTACULAR_SETTINGS = {
    "TITLE": "Opsdeck API",
    "DESCRIPTION": "Tasks, approvals and reconciliation for operations teams. Cursor-paginated.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two models call their state "status": name each enum after its model.
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "tasks.models.Task.Status",
        "VersionStatusEnum": "approvals.models.Version.Status",
        # reconciliation workflow (issue 14)
        "ResolutionCodeEnum": "reconciliation.models.ReconciliationException.ResolutionCode",
        "ScheduledRunOutcomeEnum": "reconciliation.workflow.models.JobSchedule.Outcome",
        "EntityTypeEnum": "approvals.models.EntityType",  # versions and rule scopes
    },
    # The error envelope on every operation, for every 4xx/503 it can answer (project/api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "project.api.schema.add_error_responses",
    ],
}

# --- Jobs -------------------------------------------------------------------------------------

PARTITION_MONTHS_BACK = env_int("PARTITION_MONTHS_BACK", 6)
PARTITION_MONTHS_AHEAD = env_int("PARTITION_MONTHS_AHEAD", 6)
# REFRESH MATERIALIZED VIEW runs longer than the connections' statement_timeout allows.
MATVIEW_REFRESH_TIMEOUT_S = env_int("MATVIEW_REFRESH_TIMEOUT_S", 900)
MATVIEW_REFRESH_LOCK_TIMEOUT_S = env_int("MATVIEW_REFRESH_LOCK_TIMEOUT_S", 10)
TASK_NOTIFY_TIMEOUT_S = env_int("TASK_NOTIFY_TIMEOUT_S", 10)
TASK_NOTIFY_WEBHOOK_URLS = env_list("TASK_NOTIFY_WEBHOOK_URLS", "")
# HMAC key of the X-Opsdeck-Signature on task webhooks (docs/webhooks.md); empty sends them unsigned.
TASK_NOTIFY_WEBHOOK_SECRET = env_str("TASK_NOTIFY_WEBHOOK_SECRET", "")
TASK_STATS_CACHE_TTL_S = 300
# Ranked search (`search=`) ranks at most this many matching tasks: the newest matches when the
# newest TASK_SEARCH_RECENT_WINDOW tasks hold that many (a common word), else those plus the first
# the GIN index finds. A word matching more is answered from those (refine the words for others).
TASK_SEARCH_CANDIDATES_MAX = env_int("TASK_SEARCH_CANDIDATES_MAX", 1000)
TASK_SEARCH_RECENT_WINDOW = env_int("TASK_SEARCH_RECENT_WINDOW", 20_000)

# --- Email (django.core.mail; docs/settings.md) -----------------------------------------------

# Development prints mail on the console (`make run` sets it, as it runs with DEBUG off); tests
# use Django's locmem backend (mail.outbox); production sends through SMTP.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
# Django waits forever by default; a stalled SMTP server must not hold a job's transaction.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT_S", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "opsdeck@localhost")
SERVER_EMAIL = env_str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)

# --- Approvals (limits and thresholds from the approvals guide, 000) -----------------------------

AUTOMATION_BATCH_SIZE = env_int("AUTOMATION_BATCH_SIZE", 500)
# Named for the automation (issue 12); the generic names of before are read as a fallback.
AUTOMATION_MAX_CONCURRENT_RUNS = env_int("AUTOMATION_MAX_CONCURRENT_RUNS", env_int("SCHEDULER_MAX_CONCURRENT_JOBS", 3))
# A run stops between batches after this long; the next run continues.
AUTOMATION_RUN_TIMEOUT_S = env_int("AUTOMATION_RUN_TIMEOUT_S", env_int("JOB_TIMEOUT_SECONDS", 30))
# "Run now" refuses beyond this many queued runs.
AUTOMATION_QUEUE_MAX_SIZE = env_int("AUTOMATION_QUEUE_MAX_SIZE", env_int("QUEUE_MAX_SIZE", 1000))
# The guard reads the database, not the host (approvals/guard.py, docs/settings.md).
AUTOMATION_GUARD_PROBE = env_str("AUTOMATION_GUARD_PROBE", "approvals.guard.database_signals")
AUTOMATION_GUARD_MAX_LOCK_WAITS = env_int("AUTOMATION_GUARD_MAX_LOCK_WAITS", 5)
AUTOMATION_GUARD_BACKENDS_MAX_SHARE = float(env_str("AUTOMATION_GUARD_BACKENDS_MAX_SHARE", "0.8"))
AUTOMATION_GUARD_MAX_REPLICA_LAG_S = env_int("AUTOMATION_GUARD_MAX_REPLICA_LAG_S", 30)
AUTOMATION_GUARD_MAX_QUEUE_DEPTH = env_int("AUTOMATION_GUARD_MAX_QUEUE_DEPTH", 100)
AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS = env_int("AUTOMATION_GUARD_MAX_CONSECUTIVE_SKIPS", 5)
AUTOMATION_GUARD_SMALL_BATCH_SIZE = env_int("AUTOMATION_GUARD_SMALL_BATCH_SIZE", 50)
AUTOMATION_BACKTEST_DEFAULT_DAYS = env_int("AUTOMATION_BACKTEST_DEFAULT_DAYS", 30)
AUTOMATION_RULE_CACHE_TTL_S = 300
APPROVALS_PER_MINUTE = env_int("APPROVALS_PER_MINUTE", 100)
REJECTIONS_PER_MINUTE = env_int("REJECTIONS_PER_MINUTE", 50)
PENDING_COUNT_CACHE_TTL_S = env_int("PENDING_COUNT_CACHE_TTL_S", 10)
FALSE_POSITIVE_WINDOW_HOURS = env_int("FALSE_POSITIVE_WINDOW_HOURS", 168)
# Notifications for approvals staff (approvals/notifications.py, docs/approvals-rules.md).
# Guard skips are counted over this window; "more than N skips" compares with that count.
APPROVALS_NOTIFY_SKIPS_WINDOW_MINUTES = env_int("APPROVALS_NOTIFY_SKIPS_WINDOW_MINUTES", 60)
# Disagreement of rules in evaluate mode: over the would-be decisions recorded in this window,
# and only for a rule with at least this many compared with staff (1 of 1 pages nobody).
APPROVALS_NOTIFY_DISAGREEMENT_WINDOW_HOURS = env_int("APPROVALS_NOTIFY_DISAGREEMENT_WINDOW_HOURS", 168)
APPROVALS_NOTIFY_DISAGREEMENT_MIN_SAMPLE = env_int("APPROVALS_NOTIFY_DISAGREEMENT_MIN_SAMPLE", 20)
# Subscriptions claimed per run (the rest are due next minute): bounds one run's transaction.
APPROVALS_NOTIFY_MAX_SUBSCRIPTIONS_PER_RUN = env_int("APPROVALS_NOTIFY_MAX_SUBSCRIPTIONS_PER_RUN", 500)

# --- Reconciliation (docs/reconciliation.md) -------------------------------------------------

RECONCILIATION_CONCURRENCY = env_int("RECONCILIATION_CONCURRENCY", 2)  # executions run at once per deployment
# A running execution with no heartbeat for this long lost its worker: the sweeper queues it again.
RECONCILIATION_STUCK_AFTER_S = env_int("RECONCILIATION_STUCK_AFTER_S", 600)
RECONCILIATION_MAX_ATTEMPTS = env_int("RECONCILIATION_MAX_ATTEMPTS", 3)  # then the execution fails
RECONCILIATION_SUMMARY_CACHE_S = env_int("RECONCILIATION_SUMMARY_CACHE_S", 60)  # guide 001, finished executions
RECONCILIATION_SUMMARY_LIVE_CACHE_S = env_int("RECONCILIATION_SUMMARY_LIVE_CACHE_S", 5)  # queued/running: progress
RECONCILIATION_JOB_LIST_CACHE_S = env_int("RECONCILIATION_JOB_LIST_CACHE_S", 300)  # guide 001
# work_mem of the matcher's own transactions (SET LOCAL: per pass, also behind PgBouncer) for its
# hash joins and sorts; the server's default stays small for every other query.
RECONCILIATION_MATCH_WORK_MEM = env_str("RECONCILIATION_MATCH_WORK_MEM", "64MB")
# One statement of a pass only: the sort of its matches before they are numbered (~100 MB for the
# exact pass at 1M x 1M, which spilled to disk at 64MB).
RECONCILIATION_MATCH_SORT_WORK_MEM = env_str("RECONCILIATION_MATCH_SORT_WORK_MEM", "192MB")
RECONCILIATION_INGEST_WORK_MEM = env_str("RECONCILIATION_INGEST_WORK_MEM", "64MB")  # an upload's sorts, SET LOCAL
# Bank statements are read whole (a day or a month of one account); larger ones are a 400.
RECONCILIATION_STATEMENT_MAX_BYTES = env_int("RECONCILIATION_STATEMENT_MAX_BYTES", 20 * 1024 * 1024)
# An export's COPY runs in place of DB_STATEMENT_TIMEOUT_MS: a million rows to a slow client.
RECONCILIATION_EXPORT_TIMEOUT_S = env_int("RECONCILIATION_EXPORT_TIMEOUT_S", 1800)

# --- Reconciliation webhooks (docs/webhooks.md) ------------------------------------------------

# Off: endpoints must resolve to public addresses only (no loopback/private/link-local targets).
WEBHOOK_ALLOW_PRIVATE_TARGETS = env_bool("WEBHOOK_ALLOW_PRIVATE_TARGETS", False)
WEBHOOK_TIMEOUT_S = float(env_str("WEBHOOK_TIMEOUT_S", "10"))  # per network step (connect, send, response)
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)  # then the delivery is dead
WEBHOOK_BACKOFF_BASE_S = env_int("WEBHOOK_BACKOFF_BASE_S", 30)  # retry n waits U(0, min(max, base·2^(n-1)))
WEBHOOK_BACKOFF_MAX_S = env_int("WEBHOOK_BACKOFF_MAX_S", 6 * 3600)
WEBHOOK_SEND_DUE_BATCH = env_int("WEBHOOK_SEND_DUE_BATCH", 500)  # deliveries queued per send_due run

# --- Observability ----------------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
SLOW_QUERY_MS = env_int("SLOW_QUERY_MS", 200)
# /metrics answers requests from these networks, or carrying `Authorization: Bearer METRICS_TOKEN`.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
READY_CHECK_TIMEOUT_S = float(env_str("READY_CHECK_TIMEOUT_S", "1.0"))
# Every web/worker/beat process publishes its DB pool stats to Redis (project/poolstats.py).
POOL_STATS_KEY_PREFIX = env_str("POOL_STATS_KEY_PREFIX", "opsdeck:poolstats")
POOL_STATS_INTERVAL_S = float(env_str("POOL_STATS_INTERVAL_S", "10"))
POOL_STATS_TTL_S = env_int("POOL_STATS_TTL_S", 30)
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Monitoring cockpit (thresholds: PgHero, the guides 000/001/003; docs/monitoring.md) -------

MONITORING_STATEMENT_TIMEOUT = env_str("MONITORING_STATEMENT_TIMEOUT", "3s")  # every catalog read
# Every catalog read waits at most this long for a lock (a size function queued behind DDL):
# the object or panel then says "unavailable: locked by pid X" instead of the page hanging.
MONITORING_LOCK_TIMEOUT = env_str("MONITORING_LOCK_TIMEOUT", "100ms")
MONITORING_HISTORY_DAYS = env_int("MONITORING_HISTORY_DAYS", 14)
# Request latency by route: the busiest views whose per-minute p95 the sampler keeps (System page).
MONITORING_ROUTES_SHOWN = env_int("MONITORING_ROUTES_SHOWN", 10)
MONITORING_UNUSED_INDEX_MIN_BYTES = env_int("MONITORING_UNUSED_INDEX_MIN_BYTES", 1024 * 1024)
MONITORING_MISSING_INDEX_MIN_ROWS = env_int("MONITORING_MISSING_INDEX_MIN_ROWS", 10_000)
# Index advisor: the top statements by total time it reads, the calls one needs to count, and
# the cost reduction (HypoPG) a candidate must bring to be suggested (Dexter: 50%).
MONITORING_ADVISOR_STATEMENTS = env_int("MONITORING_ADVISOR_STATEMENTS", 100)
MONITORING_ADVISOR_MIN_CALLS = env_int("MONITORING_ADVISOR_MIN_CALLS", 5)
MONITORING_ADVISOR_MIN_COST_REDUCTION = float(env_str("MONITORING_ADVISOR_MIN_COST_REDUCTION", "0.5"))
MONITORING_CACHE_HIT_MIN = float(env_str("MONITORING_CACHE_HIT_MIN", "0.99"))
MONITORING_LONG_QUERY_S = env_int("MONITORING_LONG_QUERY_S", 60)
MONITORING_SLOW_QUERY_MEAN_MS = env_int("MONITORING_SLOW_QUERY_MEAN_MS", 20)
MONITORING_SLOW_QUERY_MIN_CALLS = env_int("MONITORING_SLOW_QUERY_MIN_CALLS", 100)
MONITORING_SEQUENCE_USED_MAX = float(env_str("MONITORING_SEQUENCE_USED_MAX", "0.9"))
MONITORING_PARTITION_MONTHS_AMBER = env_int("MONITORING_PARTITION_MONTHS_AMBER", 2)
MONITORING_PENDING_AMBER = env_int("MONITORING_PENDING_AMBER", 20)
MONITORING_PENDING_RED = env_int("MONITORING_PENDING_RED", 50)
MONITORING_QUEUE_DEPTH_MAX = env_int("MONITORING_QUEUE_DEPTH_MAX", 1000)
MONITORING_POOL_USAGE_MAX = float(env_str("MONITORING_POOL_USAGE_MAX", "0.8"))
MONITORING_P95_QUERY_MS_MAX = env_int("MONITORING_P95_QUERY_MS_MAX", 100)
MONITORING_P95_QUERY_MS_RED = env_int("MONITORING_P95_QUERY_MS_RED", 500)  # guide 000: alert > 500 ms
# A table is worth a VACUUM past both: this share of its rows dead, and this many dead rows.
MONITORING_DEAD_ROWS_RATIO_MAX = float(env_str("MONITORING_DEAD_ROWS_RATIO_MAX", "0.2"))
MONITORING_DEAD_ROWS_MIN = env_int("MONITORING_DEAD_ROWS_MIN", 10_000)
MONITORING_CONNECTIONS_USAGE_MAX = float(env_str("MONITORING_CONNECTIONS_USAGE_MAX", "0.8"))
MONITORING_ERROR_RATE_MAX = float(env_str("MONITORING_ERROR_RATE_MAX", "0.01"))
MONITORING_INSPECT_TIMEOUT_S = float(env_str("MONITORING_INSPECT_TIMEOUT_S", "1.0"))
MONITORING_INSPECT_CACHE_S = env_int("MONITORING_INSPECT_CACHE_S", 300)
MONITORING_ACTION_STATEMENT_TIMEOUT = env_str("MONITORING_ACTION_STATEMENT_TIMEOUT", "30min")
MONITORING_ACTION_LOCK_TIMEOUT = env_str("MONITORING_ACTION_LOCK_TIMEOUT", "5s")
MONITORING_METRICS_CACHE_S = env_int("MONITORING_METRICS_CACHE_S", 60)
# PgBouncer's admin console (postgres://user@host:6432/pgbouncer): the pool page shows SHOW POOLS.
PGBOUNCER_ADMIN_URL = env_str("PGBOUNCER_ADMIN_URL", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "project.logging.RedactSecretsFilter"}},
    "formatters": {"json": {"()": "project.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "opsdeck": {"level": LOG_LEVEL, "handlers": ["console"], "propagate": False},
    },
}
