from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from knox.models import get_token_model


class Command(BaseCommand):
    help = "Mint an API token for a user (stored hashed; the token is shown once)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, **options):
        try:
            user = get_user_model().objects.get(username=options["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        _, token = get_token_model().objects.create(user=user)
        self.stdout.write(token)
