from django.core.management.base import BaseCommand

from project.schedules import sync_schedules


class Command(BaseCommand):
    help = "Sync beat schedules from project/schedules.py into django-celery-beat (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="put admin-edited crontabs back to the defaults")

    def handle(self, *args, **options):
        result = sync_schedules(reset=options["reset"])
        self.stdout.write(
            f"schedules: {len(result['created'])} created, {len(result['updated'])} updated, "
            f"{len(result['disabled'])} disabled"
        )
