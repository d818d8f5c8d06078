from django.urls import path

from monitoring import api, api_advisor, api_retention, api_routes

urlpatterns = [
    path("pool-stats", api.PoolStatsView.as_view(), name="performance-pool-stats"),
    path("database-stats", api.DatabaseStatsView.as_view(), name="performance-database-stats"),
    path("index-usage", api.IndexUsageView.as_view(), name="performance-index-usage"),
    path("cache-stats", api.CacheStatsView.as_view(), name="performance-cache-stats"),
    path("table-bloat", api.TableBloatView.as_view(), name="performance-table-bloat"),
    path("slow-queries", api.SlowQueriesView.as_view(), name="performance-slow-queries"),
    path("partitions", api.PartitionsView.as_view(), name="performance-partitions"),
    path("system-metrics", api.SystemMetricsView.as_view(), name="performance-system-metrics"),
    path("backlog", api.BacklogView.as_view(), name="performance-backlog"),
    path("index-advisor", api_advisor.IndexAdvisorView.as_view(), name="performance-index-advisor"),
    path("request-latency", api_routes.RequestLatencyView.as_view(), name="performance-request-latency"),
    path("retention", api_retention.RetentionView.as_view(), name="performance-retention"),
    path("full-report", api.FullReportView.as_view(), name="performance-full-report"),
]
