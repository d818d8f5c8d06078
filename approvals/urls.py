from django.urls import path
from rest_framework.routers import DefaultRouter

from approvals.api import AtomViewSet, AuditLogViewSet, PendingCountView, RuleViewSet, TopicViewSet, VersionViewSet

router = DefaultRouter()
router.register("topics", TopicViewSet, basename="approvals-topic")
router.register("atoms", AtomViewSet, basename="approvals-atom")
router.register("versions", VersionViewSet, basename="approvals-version")
router.register("rules", RuleViewSet, basename="approvals-rule")
router.register("audit-log", AuditLogViewSet, basename="approvals-audit-log")

urlpatterns = [
    path("pending-count/", PendingCountView.as_view(), name="approvals-pending-count"),
    *router.urls,
]
