"""Configuration from the environment: database connections, pool, Redis URLs."""

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from project.settings import celery_url_from_redis, database_config


def test_every_connection_names_its_role_and_has_a_30s_statement_timeout(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('application_name'), current_setting('statement_timeout')")
        application_name, statement_timeout = cursor.fetchone()
    assert application_name == "opsdeck-web"
    assert statement_timeout == "30s"


def test_database_config_uses_the_native_pool_behind_the_prometheus_backend(settings):
    config = database_config("postgres://u:p@db.example.com:5433/opsdeck", "opsdeck-worker")
    assert config["ENGINE"] == "psqlextra.backend"
    assert settings.POSTGRES_EXTRA_DB_BACKEND_BASE == "django_prometheus.db.backends.postgresql"
    assert config["CONN_MAX_AGE"] == 0
    assert config["CONN_HEALTH_CHECKS"] is True
    assert config["HOST"] == "db.example.com" and config["PORT"] == 5433
    options = config["OPTIONS"]
    assert options["application_name"] == "opsdeck-worker"
    assert options["pool"] == {"min_size": 2, "max_size": 10, "timeout": 10, "name": "opsdeck-worker"}
    assert options["options"] == "-c statement_timeout=30000"


def test_behind_pgbouncer_there_are_no_prepared_statements_startup_options_or_server_side_cursors(monkeypatch):
    monkeypatch.setattr("project.settings.DB_BEHIND_PGBOUNCER", True)
    config = database_config("postgres://u@pgbouncer:6432/opsdeck", "opsdeck-web")
    assert config["OPTIONS"]["prepare_threshold"] is None
    assert "options" not in config["OPTIONS"]
    assert config["DISABLE_SERVER_SIDE_CURSORS"] is True


def test_a_non_postgres_database_url_is_refused():

    with pytest.raises(ImproperlyConfigured, match="PostgreSQL"):
        database_config("mysql://u@h/db", "opsdeck-web")


def test_celery_speaks_the_same_unix_socket_redis_as_the_cache():
    assert celery_url_from_redis("unix:///run/redis.sock?db=2") == "redis+socket:///run/redis.sock?virtual_host=2"
    assert celery_url_from_redis("redis://cache:6379/0") == "redis://cache:6379/0"
