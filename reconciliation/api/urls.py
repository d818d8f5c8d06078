"""Every reconciliation endpoint, under one prefix: /api/v1/reconciliations/.

The paths of the former prefix /api/v1/reconciliation/ (and its `unmatched/`, now `exceptions/`)
still answer, with a `Deprecation` header and absent from the OpenAPI schema
(api/deprecated_urls.py).
"""

from django.urls import path

from project.api.routers import Router
from reconciliation.api import workflow as workflow_api
from reconciliation.api.analytics import AnalyticsViewSet
from reconciliation.api.export import ExecutionExportViewSet
from reconciliation.api.ingest import SourceProfileViewSet, StatementViewSet
from reconciliation.api.jobs import ExecutionSummaryView, ExecutionViewSet, JobViewSet, TenantViewSet
from reconciliation.api.review import MatchViewSet
from reconciliation.api.webhooks import WebhookDeliveryViewSet, WebhookEndpointViewSet

VIEWSETS = [
    # Actions on jobs and executions from viewsets of their own, first: the root view's entries for
    # jobs/ and executions/ are then the main viewsets' lists.
    ("jobs", StatementViewSet, "recon-statement"),
    ("executions", ExecutionExportViewSet, "recon-export"),
    ("source-profiles", SourceProfileViewSet, "recon-source-profile"),
    ("tenants", TenantViewSet, "recon-tenant"),
    ("jobs", JobViewSet, "recon-job"),
    ("executions", ExecutionViewSet, "recon-execution"),
    ("matches", MatchViewSet, "recon-match"),
    # The exceptions queue with its workflow (issue 14: assignee, age bucket, codes, bulk acts).
    ("exceptions", workflow_api.ExceptionViewSet, "recon-exception"),
    ("webhook-endpoints", WebhookEndpointViewSet, "recon-webhook-endpoint"),
    ("webhook-deliveries", WebhookDeliveryViewSet, "recon-webhook-delivery"),
    ("analytics", AnalyticsViewSet, "recon-analytics"),
    # The workflow (issue 14): members, scheduled runs, periods and sign-off.
    ("members", workflow_api.MembershipViewSet, "recon-member"),
    ("schedules", workflow_api.ScheduleViewSet, "recon-schedule"),
    ("periods", workflow_api.PeriodViewSet, "recon-period"),
]
# The guide's (001) path for an execution's summary, kept as it was published.
SUMMARY = path("<int:pk>/summary", ExecutionSummaryView.as_view(), name="reconciliation-summary")


def router(renamed: dict[str, str] | None = None) -> Router:
    router = Router()
    for prefix, viewset, basename in VIEWSETS:
        router.register((renamed or {}).get(prefix, prefix), viewset, basename=basename)
    return router


urlpatterns = [SUMMARY, *router().urls]
