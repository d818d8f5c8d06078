from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "project"
    verbose_name = "Platform"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate
        from django.utils.module_loading import autodiscover_modules

        from project.api.authentication import connect_token_cache_signals
        from project.db.attribution import install_sql_attribution
        from project.db.pool import install_quick_pool_reconnect
        from project.db.slow_queries import install_slow_query_logger
        from project.metrics import register_metrics_collector
        from project.models import ActivityLog
        from project.outbox import OutboxCollector
        from project.partitions import maintain_partitions_after_migrate, register_monthly_partitions
        from project.poolstats import PoolStatsCollector
        from project.retention import RetentionCollector
        from project.schedules import sync_schedules_after_migrate

        install_slow_query_logger()
        connect_token_cache_signals()
        install_quick_pool_reconnect()
        install_sql_attribution()
        register_metrics_collector(PoolStatsCollector())
        register_metrics_collector(OutboxCollector())
        register_monthly_partitions(ActivityLog)
        # Every app's tables under retention: <app>/retention.py registers them.
        autodiscover_modules("retention")
        register_metrics_collector(RetentionCollector())
        post_migrate.connect(sync_schedules_after_migrate, sender=self)
        # A fresh database gets its monthly partitions at once, not at the first nightly run.
        post_migrate.connect(maintain_partitions_after_migrate, sender=self)
