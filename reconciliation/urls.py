from project.api.routers import Router
from reconciliation import api, bankfiles_api
from reconciliation.analytics_api import AnalyticsViewSet

router = Router()
# Actions on jobs and executions from their own viewsets; registered first so the root view's
# entries for jobs/ and executions/ stay the main viewsets' lists.
router.register("jobs", bankfiles_api.StatementViewSet, basename="recon-statement")
router.register("executions", bankfiles_api.ExecutionExportViewSet, basename="recon-export")
router.register("source-profiles", bankfiles_api.SourceProfileViewSet, basename="recon-source-profile")
router.register("tenants", api.TenantViewSet, basename="recon-tenant")
router.register("jobs", api.JobViewSet, basename="recon-job")
router.register("executions", api.ExecutionViewSet, basename="recon-execution")
router.register("matches", api.MatchViewSet, basename="recon-match")
router.register("unmatched", api.UnmatchedViewSet, basename="recon-unmatched")
router.register("webhook-endpoints", api.WebhookEndpointViewSet, basename="recon-webhook-endpoint")
router.register("webhook-deliveries", api.WebhookDeliveryViewSet, basename="recon-webhook-delivery")
router.register("analytics", AnalyticsViewSet, basename="recon-analytics")

urlpatterns = router.urls
