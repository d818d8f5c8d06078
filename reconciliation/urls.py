from project.api.routers import Router
from reconciliation import api
from reconciliation.analytics_api import AnalyticsViewSet
from reconciliation.workflow import api as workflow_api

router = Router()
router.register("tenants", api.TenantViewSet, basename="recon-tenant")
router.register("jobs", api.JobViewSet, basename="recon-job")
router.register("executions", api.ExecutionViewSet, basename="recon-execution")
router.register("matches", api.MatchViewSet, basename="recon-match")
router.register("unmatched", api.UnmatchedViewSet, basename="recon-unmatched")
router.register("webhook-endpoints", api.WebhookEndpointViewSet, basename="recon-webhook-endpoint")
router.register("webhook-deliveries", api.WebhookDeliveryViewSet, basename="recon-webhook-delivery")
router.register("analytics", AnalyticsViewSet, basename="recon-analytics")
# The workflow (issue 14): members, scheduled runs, the exceptions workflow, periods and sign-off.
router.register("members", workflow_api.MembershipViewSet, basename="recon-member")
router.register("schedules", workflow_api.ScheduleViewSet, basename="recon-schedule")
router.register("exceptions", workflow_api.ExceptionViewSet, basename="recon-exception")
router.register("periods", workflow_api.PeriodViewSet, basename="recon-period")

urlpatterns = router.urls
