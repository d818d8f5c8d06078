import hashlib
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles.finders import get_finders
from django.core.management import call_command
from django.core.management.base import BaseCommand

from project.matviews import refresh_materialized_view, registered_materialized_views


class Command(BaseCommand):
    help = (
        "What `make run` does before starting the processes, in one Django start-up: migrate, sync "
        "beat schedules, ensure an admin user, load the demo data (idempotent) and refresh the materialized "
        "views over it, collect static files."
    )

    def handle(self, *args, **options):
        call_command("migrate", interactive=False, verbosity=0)
        call_command("sync_schedules")
        call_command("ensure_admin")  # first: the reconciliation demo makes superusers members of its tenant
        call_command("seed_demo", tasks=2000, versions=300, reconciliation=2000, verbosity=options["verbosity"])
        # Views built over the demo data now, not at the first scheduled refresh (up to a day).
        for view in registered_materialized_views():
            refresh_materialized_view(view.name)
        collect_static_when_changed()


def collect_static_when_changed() -> None:
    """collectstatic only when a source file changed: with DEBUG off the storage re-hashes and
    re-compresses every file (about 50 s of CPU), which made every `make run` start slow."""
    digest = hashlib.blake2b(digest_size=16)
    for finder in get_finders():
        for path, storage in finder.list([]):
            stat = Path(storage.path(path)).stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    digest.update(settings.STORAGES["staticfiles"]["BACKEND"].encode())
    stamp = Path(settings.STATIC_ROOT) / ".sources-fingerprint"
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    call_command("collectstatic", interactive=False, verbosity=0)
    stamp.write_text(digest.hexdigest())
