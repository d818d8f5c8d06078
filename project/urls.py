from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project import health
from project.admin_activity import activity_log_view
from project.api.activity import ActivityLogViewSet

urlpatterns = [
    path("health", health.health, name="health"),
    path("ready", health.ready, name="ready"),
    path("metrics", health.metrics, name="metrics"),
    # Before admin.site.urls: ActivityLog (composite key) cannot be a registered admin model.
    path("admin/activity-log/", admin.site.admin_view(activity_log_view), name="admin-activity-log"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/activity/", ActivityLogViewSet.as_view({"get": "list"}), name="activity-list"),
    path("api/v1/", include("tasks.urls")),
    path("api/v1/approvals/", include("approvals.urls")),
    path("api/v1/database/performance/", include("monitoring.urls")),
    path("api/v1/reconciliations/", include("reconciliation.api.urls")),
    # The former prefix: same views, a Deprecation header, not in the schema.
    path("api/v1/reconciliation/", include("reconciliation.api.deprecated_urls")),
]

handler400 = "project.api.errors.handler400"
handler403 = "project.api.errors.handler403"
handler404 = "project.api.errors.handler404"
handler500 = "project.api.errors.handler500"
