import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Make sure a superuser exists. Honours DJANGO_SUPERUSER_USERNAME/_PASSWORD/_EMAIL; "
        "otherwise creates `admin` with a generated password, printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"admin user {username!r} exists")
            return
        env = {"DJANGO_SUPERUSER_USERNAME": username}
        env.setdefault("DJANGO_SUPERUSER_EMAIL", os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@example.com"))
        generated = None
        if not os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
            generated = secrets.token_urlsafe(12)
            env["DJANGO_SUPERUSER_PASSWORD"] = generated
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            call_command("createsuperuser", "--noinput", verbosity=0)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        if generated:
            self.stdout.write(self.style.SUCCESS(f"created admin user {username!r} with password: {generated}"))
            self.stdout.write("(shown once; change it in the admin)")
        else:
            self.stdout.write(f"created admin user {username!r}")
