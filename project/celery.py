"""The Celery app. Jobs live in each app's jobs.py (a Django app named `tasks` would otherwise
collide with Celery's default `<app>.tasks` discovery)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("opsdeck")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(related_name="jobs")
