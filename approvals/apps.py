from django.apps import AppConfig


class ApprovalsConfig(AppConfig):
    name = "approvals"
    verbose_name = "Approvals"

    def ready(self) -> None:
        from approvals.models import AutomationAuditLog
        from approvals.seed import seed_versions
        from project.partitions import register_monthly_partitions
        from project.seeding import register_seeder

        register_monthly_partitions(AutomationAuditLog)
        register_seeder("versions", seed_versions, help="pending versions (topics, atoms, authors as needed)")
