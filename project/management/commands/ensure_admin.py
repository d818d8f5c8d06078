import os
import secrets
from contextlib import contextmanager

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


@contextmanager
def environment(**values: str):
    """Set environment variables for the block, restoring the previous values after."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Command(BaseCommand):
    help = (
        "Make sure a superuser exists, through `createsuperuser --noinput`: it honours "
        "DJANGO_SUPERUSER_USERNAME/_PASSWORD/_EMAIL; without them it creates `admin` with a "
        "generated password, printed once."
    )

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME") or "admin"
        if get_user_model().objects.filter(username=username).exists():
            self.stdout.write(f"admin user {username!r} exists")
            return
        generated = None if os.environ.get("DJANGO_SUPERUSER_PASSWORD") else secrets.token_urlsafe(12)
        defaults = {
            "DJANGO_SUPERUSER_USERNAME": username,
            "DJANGO_SUPERUSER_EMAIL": os.environ.get("DJANGO_SUPERUSER_EMAIL") or "admin@example.com",
        }
        if generated:
            defaults["DJANGO_SUPERUSER_PASSWORD"] = generated
        with environment(**defaults):
            call_command("createsuperuser", "--noinput", verbosity=0)
        if generated:
            self.stdout.write(self.style.SUCCESS(f"created admin user {username!r} with password: {generated}"))
            self.stdout.write("(shown once; change it in the admin)")
        else:
            self.stdout.write(f"created admin user {username!r}")
