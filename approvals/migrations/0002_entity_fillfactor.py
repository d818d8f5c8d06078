from django.db import migrations

# Topics and atoms are rewritten whenever a version of theirs is approved, and none of the columns
# that change (title, body, updated_at) is indexed: with free room on each page PostgreSQL can
# update them in place (HOT) and skip every index. Django has no Meta option for fillfactor.
TABLES = ("approvals_topic", "approvals_atom")


class Migration(migrations.Migration):
    dependencies = [("approvals", "0001_initial")]

    operations = [
        migrations.RunSQL(
            [f"ALTER TABLE {table} SET (fillfactor = 80)" for table in TABLES],
            reverse_sql=[f"ALTER TABLE {table} RESET (fillfactor)" for table in TABLES],
        )
    ]
