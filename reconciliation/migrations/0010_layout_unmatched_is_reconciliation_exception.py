"""Unmatched is renamed ReconciliationException (what the app calls it everywhere else).

The table keeps its name, `reconciliation_unmatched`: the model now says so (db_table) before it
is renamed, so neither step issues DDL on the partitioned table or its partitions.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0009_pg_trgm"),
    ]

    operations = [
        migrations.AlterModelTable(name="unmatched", table="reconciliation_unmatched"),
        migrations.RenameModel(old_name="Unmatched", new_name="ReconciliationException"),
    ]
