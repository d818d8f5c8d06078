# The metadata GIN index moves to the jsonb_path_ops operator class. With the default jsonb_ops,
# `metadata @> {"job_id": 17}` looks up the key "job_id" (present in every row of a kind) and the
# value 17 separately and intersects them: at 10M rows bench/activity.py saw 124 index pages read
# for one key. jsonb_path_ops indexes a hash of the path and value together: one small posting
# list. It serves @> (every metadata read of the reader), not the key-exists operators (unused).
# Built partition by partition with CONCURRENTLY, as migration 0005 does, then the old one dropped.

from django.contrib.postgres.indexes import GinIndex
from django.db import migrations

TABLE = "project_activitylog"
INDEX = "activity_metadata_path_gin"


def create_index_without_blocking_writes(apps, schema_editor):
    """The parent's index ON ONLY (invalid, instant), each partition's built CONCURRENTLY, then
    attached; the parent's becomes valid when the last partition's is attached."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f'CREATE INDEX IF NOT EXISTS "{INDEX}" ON ONLY "{TABLE}" USING gin (metadata jsonb_path_ops)')
        cursor.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = %s::regclass ORDER BY 1", [TABLE]
        )
        for (partition,) in cursor.fetchall():
            child = f"{partition}_metadata_path_gin"[:63]
            cursor.execute(
                f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{child}" ON "{partition}" USING gin (metadata jsonb_path_ops)'
            )
            cursor.execute(f'ALTER INDEX "{INDEX}" ATTACH PARTITION "{child}"')


def drop_index(apps, schema_editor):
    schema_editor.execute(f'DROP INDEX IF EXISTS "{INDEX}"')


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("project", "0006_pgbouncer_lease"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(
                    model_name="activitylog",
                    index=GinIndex(fields=["metadata"], name=INDEX, opclasses=["jsonb_path_ops"]),
                ),
            ],
            database_operations=[migrations.RunPython(create_index_without_blocking_writes, drop_index)],
        ),
        # Dropping the old index is a catalog change: a brief lock, no scan.
        migrations.RemoveIndex(model_name="activitylog", name="activity_metadata_gin"),
    ]
