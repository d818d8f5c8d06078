from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"
    verbose_name = "Reconciliation"

    def ready(self) -> None:
        from project.partitions import register_monthly_partitions
        from reconciliation.models import Match, Unmatched

        register_monthly_partitions(Match)
        register_monthly_partitions(Unmatched)

        from reconciliation.analytics import register_analytics_views

        register_analytics_views()
