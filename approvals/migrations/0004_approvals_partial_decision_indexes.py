# Issue 15 (bulk approve 500 p95): the full indexes on decided_by, decided_by_rule and reverted_by
# become partial (only set values). Every decision is a non-HOT update, so each decided row went
# into every full index, NULLs included. The new indexes are built before the old ones go, both
# CONCURRENTLY (no lock that blocks writes on a table of a million versions), so ON DELETE SET
# NULL always has an index.

import django.db.models.deletion
from django.conf import settings
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

# Django's names for the single-column foreign-key indexes of 0001_initial.
OLD_INDEXES = {
    "decided_by": "approvals_version_decided_by_id_7d4dc0cc",
    "decided_by_rule": "approvals_version_decided_by_rule_id_fb7fee91",
    "reverted_by": "approvals_version_reverted_by_id_1e8ce4d2",
}
OLD_COLUMNS = {"decided_by": "decided_by_id", "decided_by_rule": "decided_by_rule_id", "reverted_by": "reverted_by_id"}


def unindexed_foreign_key(field: str, to) -> migrations.SeparateDatabaseAndState:
    """The field without its full index: in the state an AlterField, in the database a DROP INDEX
    CONCURRENTLY (reversed by building it again concurrently)."""
    return migrations.SeparateDatabaseAndState(
        state_operations=[
            migrations.AlterField(
                model_name="version",
                name=field,
                field=models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+",
                    to=to,
                ),
            )
        ],
        database_operations=[
            migrations.RunSQL(
                f"DROP INDEX CONCURRENTLY IF EXISTS {OLD_INDEXES[field]}",
                reverse_sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {OLD_INDEXES[field]} "
                f"ON approvals_version ({OLD_COLUMNS[field]})",
            )
        ],
    )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("approvals", "0003_approvals_policy"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="version",
            index=models.Index(
                condition=models.Q(("decided_by__isnull", False)), fields=["decided_by"], name="version_decided_by_idx"
            ),
        ),
        AddIndexConcurrently(
            model_name="version",
            index=models.Index(
                condition=models.Q(("decided_by_rule__isnull", False)),
                fields=["decided_by_rule"],
                name="version_decided_rule_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="version",
            index=models.Index(
                condition=models.Q(("reverted_by__isnull", False)),
                fields=["reverted_by"],
                name="version_reverted_by_idx",
            ),
        ),
        unindexed_foreign_key("decided_by", settings.AUTH_USER_MODEL),
        unindexed_foreign_key("decided_by_rule", "approvals.approvalrule"),
        unindexed_foreign_key("reverted_by", settings.AUTH_USER_MODEL),
    ]
