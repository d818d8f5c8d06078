from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"
    verbose_name = "Reconciliation"

    def ready(self) -> None:
        from project.partitions import register_monthly_partitions
        from reconciliation.models import Match, ReconciliationException

        register_monthly_partitions(Match)
        register_monthly_partitions(ReconciliationException)

        from reconciliation.analytics.matviews import register_analytics_views

        register_analytics_views()

        from project.seeding import register_seeder
        from reconciliation.seed import seed_reconciliation

        register_seeder(
            "reconciliation", seed_reconciliation, help="demo bank-vs-ledger records (both sides), matched once"
        )

        from project.selectors import register_tenant_scoped_category
        from reconciliation.models import TenantMembership

        # The activity log: staff who are not superusers read reconciliation acts of their tenants
        # only (a subquery, not a list: no extra query per read).
        register_tenant_scoped_category(
            "reconciliation",
            lambda user: TenantMembership.objects.filter(user_id=user.pk).values("tenant_id"),
        )
