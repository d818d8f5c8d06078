from django.core.management.base import BaseCommand
from tqdm import tqdm

from project.seeding import registered_seeders


class Command(BaseCommand):
    help = "Load demo or scale data (idempotent): `seed_demo --tasks 1000000`."

    def add_arguments(self, parser):
        for name, seeder in registered_seeders().items():
            parser.add_argument(f"--{name}", type=int, default=None, metavar="N", help=f"{seeder.help}: total rows")

    def handle(self, *args, **options):
        for name, seeder in registered_seeders().items():
            target = options.get(name)
            if target is None:
                continue
            if target < 0:
                self.stderr.write(f"--{name} must be 0 or more")
                raise SystemExit(2)
            with tqdm(total=target, desc=name, unit="rows", disable=options["verbosity"] == 0) as bar:
                inserted = seeder.seed(target, bar.update)
            self.stdout.write(f"{name}: {inserted} inserted, {target} wanted")
