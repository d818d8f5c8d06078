"""WSGI entry point for gunicorn: `gunicorn project.wsgi:application`."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

application = get_wsgi_application()

# Imported by each gunicorn worker (and runserver): this process publishes its DB pool stats.
from project.poolstats import start_pool_stats_publisher  # noqa: E402 (needs the app set up)

start_pool_stats_publisher()
