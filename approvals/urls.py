from django.urls import path

from approvals.api import (
    AtomViewSet,
    AuditLogViewSet,
    NotificationSubscriptionViewSet,
    PendingCountView,
    RuleViewSet,
    TopicViewSet,
    VersionViewSet,
)
from project.api.routers import Router

router = Router()
router.register("topics", TopicViewSet, basename="approvals-topic")
router.register("atoms", AtomViewSet, basename="approvals-atom")
router.register("versions", VersionViewSet, basename="approvals-version")
router.register("rules", RuleViewSet, basename="approvals-rule")
router.register("audit-log", AuditLogViewSet, basename="approvals-audit-log")
router.register(
    "notification-subscriptions", NotificationSubscriptionViewSet, basename="approvals-notification-subscription"
)

urlpatterns = [
    path("pending-count/", PendingCountView.as_view(), name="approvals-pending-count"),
    *router.urls,
]
