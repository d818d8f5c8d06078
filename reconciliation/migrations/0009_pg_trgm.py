from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations


class Migration(migrations.Migration):
    """The tolerance pass scores references and counterparties with pg_trgm's similarity(); its
    word-overlap fallback is weaker (a typo'd reference scores 0). pg_trgm is a trusted
    extension since PostgreSQL 13: the database owner can create it, no superuser needed."""

    dependencies = [("reconciliation", "0008_queue_entries_in_the_admin")]

    operations = [TrigramExtension()]
