"""Read-only reads of PostgreSQL's catalogs, Redis, Celery and the apps' backlogs.

The admin pages, the JSON API, the Prometheus collector and the history sampler all call these
functions: one code path for every figure. Each catalog read runs with a 5 s statement timeout
and never COUNT(*)s a big table (row counts are pg_class.reltuples estimates).
"""
